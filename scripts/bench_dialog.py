#!/usr/bin/env python3
"""Benchmark (issue 5): the spoken dialog in real calls, end of speech -> the robot's next audio,
and how many simultaneous *speaking* calls one robot carries before that latency doubles.

The real stack on one box, apart from the tests' and the other benchmarks' ports: its own
Asterisk instance "bench-dialog" (ports 264xx/294xx, RTP 47000-47999), its own database
ivr_bench_dialog (recreated and migrated), its own ``ivr-robot`` (faster-whisper + silero-vad as
the product configures them: one ASR worker, queue IVR_ASR_QUEUE=8; clock Tuesday 2027-03-16
12:00 Moscow via IVR_CLOCK_START), and a sipp phone on the carrier port that answers and *speaks*
Festival-synthesised answers (8 kHz, as tests/e2e/test_speech_dialog.py) into the call of template
``callback_offer``:

* ``yes``: 4 s after the answer (over the question: barge-in) «Да.» -> the robot says «Спасибо!
  Перезвоним…» (status callback);
* ``no_monday``: «Нет.» at 4 s, 5 s later «В понедельник утром.» -> «Когда вам удобнее?», then
  «Хорошо.» (status callback on Monday morning).

Phases: ``yes`` one call at a time (--rounds), ``no_monday`` one at a time (--rounds-no), then the
concurrency ladder (--ladder 1,2,4,8): N ``yes`` calls placed at once (the dialer at 20
originates/s, so all N say «Да.» within ~0.4 s of each other: the worst case for the one ASR
worker), --ladder-rounds rounds per step.

Two measurements of the same latency:

* robot log: ``event=reply_started after_speech_ms`` (the VAD's end-of-speech event -> the play
  request returned). The VAD fires after 500 ms of silence, so this starts ~0.5 s *after* the
  client stopped talking; ``event=utterance asr_ms`` is the recognition's share.
* on the wire (tcpdump on lo, like scripts/bench_robot.py): per call, the far end's speech in the
  RTP it sends (packets with a mu-law sample above 1000, bursts split by >= 400 ms of quiet); the
  end of a burst is the moment the client stopped talking. The reply is the robot's first
  ``POST /ari/channels/<call>/play`` after that moment and the first RTP packet Asterisk sends
  to the far end after that request (Asterisk sends no RTP to a Stasis channel with nothing
  playing, and the barge-in stopped the question). Reported: end of speech -> first reply packet,
  and -> first reply packet with speech (the prompt file's leading silence included): what the
  client hears.

"Latency doubles": the ladder's p50 (wire, end of speech -> first reply packet) compared with
the 1-call p50.

Usage: scripts/bench_dialog.py [--rounds 6] [--rounds-no 3] [--ladder 1,2,4,8] [--ladder-rounds 2]
                               [--snr DB] [--json OUT] [--keep-db]
Needs sipp, tcpdump, text2wave, root. Everything it started is stopped at the end (also on
Ctrl-C); the database is dropped unless --keep-db.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import wave
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import aiohttp  # noqa: E402

from bench_robot import ULAW_ABS, _machine_busy, _tcp_free, _udp_free, percentile, read_pcap  # noqa: E402
from ivr.config import PROJECT_ROOT, Settings  # noqa: E402

DB_NAME = "ivr_bench_dialog"
INSTANCE = "bench-dialog"
PORTS = dict(sip_port=26460, http_port=29488, ami_port=26438, agi_port=26973, health_port=29490,
             carrier_port=26490, api_port=29491, rtp_start=47000, rtp_end=47999)
MSK = timezone(timedelta(hours=3))
CLOCK = datetime(2027, 3, 16, 12, 0, tzinfo=MSK)        # Tuesday, inside 10:00-19:00 Moscow
TOPIC = {"topic": "ваш новый заказ"}
FINAL = {"confirmed", "not_received", "failed", "expired", "no_action", "cancelled", "callback", "handed_over"}
SPEECH_LEVEL = 1000
BURST_GAP = 0.4
VOICE = "(voice_msu_ru_nsh_clunits)"


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def pct(values: list[float]) -> dict:
    return {"n": len(values), "p50": percentile(values, .5), "p90": percentile(values, .9),
            "max": round(max(values), 1) if values else None}


def festival(text: str, out: Path, snr_db: float | None) -> Path:
    src = out.with_suffix(".txt")
    src.write_text(text, encoding="utf-8")
    subprocess.run(["text2wave", "-F", "8000", "-eval", VOICE, str(src), "-o", str(out)],
                   check=True, timeout=120, capture_output=True)
    if snr_db is not None:   # white noise over the whole file (as the e2e test)
        with wave.open(str(out)) as w:
            rate, x = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
        noise = np.random.default_rng(7).normal(0, 1, x.size)
        noise *= np.sqrt(np.mean(x ** 2) / 10 ** (snr_db / 10)) / np.sqrt(np.mean(noise ** 2))
        with wave.open(str(out), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
            w.writeframes(np.clip(x + noise, -32768, 32767).astype("<i2").tobytes())
    return out


# --- the wire -------------------------------------------------------------------------------------

_HDR = re.compile(rb"^(call-id|i|cseq):\s*(.+?)\r?$", re.I | re.M)
_M_AUDIO = re.compile(rb"^m=audio (\d+)", re.M)
_PLAY = re.compile(rb"^POST /ari/channels/([A-Za-z0-9._-]+)/play")


@dataclass
class WireCall:
    call_id: str
    number: str = ""
    invite_t: float = 0.0
    answer_t: float | None = None
    ast_port: int | None = None
    far_port: int | None = None
    far_speech: list[float] = field(default_factory=list)        # times of far-end packets with speech
    ast_rtp: list[tuple[float, bool]] = field(default_factory=list)  # Asterisk -> far end: (t, has speech)


def analyse(pcap: Path) -> tuple[dict[str, WireCall], dict[str, list[float]]]:
    calls: dict[str, WireCall] = {}
    by_port: dict[int, list[WireCall]] = {}
    plays: dict[str, list[float]] = {}
    rtp: list[tuple[float, int, int, bool]] = []
    lo, hi = PORTS["rtp_start"], PORTS["rtp_end"]
    for t, sport, dport, proto, payload in read_pcap(pcap):
        if proto == "tcp":
            if dport == PORTS["http_port"]:
                m = _PLAY.match(payload)
                if m:
                    plays.setdefault(m.group(1).decode(), []).append(t)
            continue
        if PORTS["carrier_port"] in (sport, dport):
            first = payload.split(b"\r\n", 1)[0]
            hdrs = {k.lower(): v.strip() for k, v in _HDR.findall(payload)}
            cid = (hdrs.get(b"call-id") or hdrs.get(b"i") or b"").decode(errors="replace")
            if not cid:
                continue
            if dport == PORTS["carrier_port"] and first.startswith(b"INVITE ") and cid not in calls:
                c = calls[cid] = WireCall(cid, invite_t=t)
                c.number = first.split()[1].decode(errors="replace").split(":", 1)[1].split("@", 1)[0]
                m = _M_AUDIO.search(payload)
                if m:
                    c.ast_port = int(m.group(1))
                    by_port.setdefault(c.ast_port, []).append(c)
            elif sport == PORTS["carrier_port"] and first.startswith(b"SIP/2.0 200") and b"INVITE" in hdrs.get(b"cseq", b""):
                c = calls.get(cid)
                if c is not None and c.answer_t is None:
                    c.answer_t = t
                    m = _M_AUDIO.search(payload)
                    if m:
                        c.far_port = int(m.group(1))
            continue
        if len(payload) >= 12 and payload[0] >> 6 == 2 and (payload[1] & 0x7F) == 0:
            audio = payload[12:]
            speech = bool(audio) and max(ULAW_ABS[b] for b in audio) > SPEECH_LEVEL
            rtp.append((t, sport, dport, speech))

    def owner(port: int, t: float) -> WireCall | None:
        return next((x for x in reversed(by_port.get(port, ())) if x.invite_t <= t), None)

    for t, sport, dport, speech in rtp:
        if lo <= sport <= hi and not lo <= dport <= hi:           # Asterisk -> somebody
            c = owner(sport, t)
            if c is not None and dport == c.far_port:
                c.ast_rtp.append((t, speech))
        elif lo <= dport <= hi and not lo <= sport <= hi:         # somebody -> Asterisk
            c = owner(dport, t)
            if c is not None and speech:
                c.far_speech.append(t)
    return calls, plays        # plays: channel id -> times of its play requests


def replies(c: WireCall, plays: list[float]) -> list[dict]:
    """Per far-end speech burst: end of speech -> play request, first reply RTP, first reply speech."""
    bursts: list[tuple[float, float]] = []
    for t in c.far_speech:
        if bursts and t - bursts[-1][1] < BURST_GAP:
            bursts[-1] = (bursts[-1][0], t)
        else:
            bursts.append((t, t))
    out = []
    for i, (start, end) in enumerate(bursts):
        end += 0.02                                       # the packet carries 20 ms of audio
        nxt = bursts[i + 1][0] if i + 1 < len(bursts) else float("inf")
        play = next((p for p in plays if p > end), None)
        row = {"speech_s": round(end - start, 2), "end_t": end}
        if play is not None and play < nxt + 30:
            row["to_play_ms"] = (play - end) * 1000
            first = next((t for t, _ in c.ast_rtp if t > play), None)
            spoken = next((t for t, s in c.ast_rtp if t > play and s), None)
            if first is not None:
                row["to_audio_ms"] = (first - end) * 1000
            if spoken is not None:
                row["to_speech_ms"] = (spoken - end) * 1000
        out.append(row)
    return out


# --- the run ----------------------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.work = PROJECT_ROOT / "var" / INSTANCE
        self.server_url = self.db_url = None
        self.settings: Settings | None = None
        self.instance = self.robot = self.far = None
        self.far_scenario = ""
        self.tcpdump: subprocess.Popen | None = None
        self.pcap = self.work / "capture.pcap"
        self.robot_started_mono = 0.0
        self.answers: dict[str, Path] = {}
        self.phases: list[dict] = []

    def robot_now(self) -> datetime:
        return CLOCK + timedelta(seconds=time.monotonic() - self.robot_started_mono)

    async def setup(self) -> None:
        from ivr.runner import RobotProcess, robot_env
        from ivr.stack.asterisk import AsteriskInstance
        from ivr.stack.postgres import create_database, drop_database, ensure_database
        from models.migrate import upgrade

        for tool in ("sipp", "tcpdump", "text2wave"):
            if shutil.which(tool) is None:
                raise SystemExit(f"{tool} is not installed")
        if os.geteuid() != 0:
            raise SystemExit("capturing on lo needs root")
        probe = Settings(asterisk_instance=INSTANCE, state_dir=self.work, ari_password="x", ami_secret="x")
        AsteriskInstance(probe).stop()                     # a previous interrupted run
        busy = [p for p in (PORTS["sip_port"], PORTS["carrier_port"]) if not _udp_free(p)] + \
               [p for p in (PORTS["http_port"], PORTS["ami_port"], PORTS["api_port"], PORTS["health_port"])
                if not _tcp_free(p)]
        if busy:
            raise SystemExit(f"ports in use: {busy}; another bench_dialog still running?")
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)

        d = Path(tempfile.mkdtemp(prefix="bench-dialog-"))
        for key, text in (("da", "Да."), ("net", "Нет."), ("monday", "В понедельник утром.")):
            self.answers[key] = festival(text, d / f"{key}.wav", self.args.snr)
        log(f"answers synthesised in {d}" + (f" with white noise at {self.args.snr:g} dB" if self.args.snr else ""))

        self.server_url = ensure_database(Settings(database_url=os.environ.get("DATABASE_URL") or None))
        drop_database(self.server_url, DB_NAME)
        self.db_url = create_database(self.server_url, DB_NAME)
        upgrade(self.db_url)
        log(f"database {DB_NAME} recreated and migrated")

        self.settings = Settings(
            database_url=self.db_url, ari_password=secrets.token_urlsafe(18), ami_secret=secrets.token_urlsafe(18),
            asterisk_instance=INSTANCE, state_dir=self.work, api_token=secrets.token_urlsafe(24),
            company_name="Эни", dialer_worker="benchdlg", dialer_max_channels=40, dialer_cps=20.0,
            dialer_client_interval=0.0, dialer_ring_timeout=20, robot_no_speech_timeout=3.0, **PORTS)
        self.instance = AsteriskInstance(self.settings)
        self.instance.ensure_image()
        self.instance.install_config()
        self.instance.start()
        log(f"asterisk instance {INSTANCE} up (pid {self.instance.pid()})")

        env = robot_env(self.settings) | {"IVR_CLOCK_START": CLOCK.isoformat()}
        self.robot_started_mono = time.monotonic()
        self.robot = RobotProcess(self.settings, self.work / "robot.log", env_overrides=env).start()
        await asyncio.to_thread(self.robot.wait_healthy, 90)
        health = await self.robot.fetch_health()
        if not health.get("speech"):
            raise RuntimeError(f"the robot has no speech engine: {self.robot.log_text()[-2000:]}")
        log(f"ivr-robot up (pid {self.robot.proc.pid}), speech {health.get('speech')}")

        rtp = f"{PORTS['rtp_start']}-{PORTS['rtp_end']}"
        bpf = f"(udp and (port {PORTS['carrier_port']} or portrange {rtp})) or (tcp dst port {PORTS['http_port']})"
        self.tcpdump = subprocess.Popen(["tcpdump", "-i", "lo", "-n", "-U", "-B", "32768", "-w", str(self.pcap), bpf],
                                        stdout=subprocess.DEVNULL, stderr=open(self.work / "tcpdump.stderr", "wb"),
                                        start_new_session=True)
        deadline = time.monotonic() + 10
        while b"listening on" not in (self.work / "tcpdump.stderr").read_bytes():
            if self.tcpdump.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("tcpdump did not start: " + (self.work / "tcpdump.stderr").read_text())
            await asyncio.sleep(0.05)
        log("tcpdump capturing on lo")

    def script(self, scenario: str) -> list:
        if scenario == "yes":
            return [("silence", 4.0), ("speak", self.answers["da"]), ("silence", 30)]
        return [("silence", 4.0), ("speak", self.answers["net"]), ("silence", 5.0),
                ("speak", self.answers["monday"]), ("silence", 30)]

    async def far_end(self, scenario: str):
        from ivr.phones.sipp import SippAnswerer

        if self.far is not None and self.far_scenario == scenario:
            return                               # the same phone for the whole ladder
        if self.far is not None:
            await self.far.stop()
        self.far_scenario = scenario
        self.far = await SippAnswerer(listen_port=PORTS["carrier_port"], workdir=self.work / f"far-{scenario}",
                                      mode="answer", hold=60, script=self.script(scenario)).start()

    async def round(self, n: int, lead: float) -> list[int]:
        """n callback_offer jobs for n new numbers, due together; waits until all are final."""
        s = self.settings
        due = (self.robot_now() + timedelta(seconds=lead)).isoformat()
        base = 10_000 + secrets.randbelow(9_000_000)
        ids: list[int] = []
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {s.api_token}"}) as http:
            for i in range(n):
                body = {"phone": f"+7916{base + i:07d}", "template": "callback_offer", "channel": "call",
                        "variables": {"address_name": "Пётр Николаевич", **TOPIC},
                        "external_id": f"bench-{uuid.uuid4().hex}", "earliest_at": due}
                async with http.post(f"http://{s.bind_host}:{s.api_port}/v1/notifications", json=body) as r:
                    payload = await r.json()
                    if r.status != 201:
                        raise RuntimeError(f"POST /v1/notifications: {r.status} {payload}")
                    ids.append(payload["id"])
        deadline = time.monotonic() + lead + 90
        while time.monotonic() < deadline:
            rows = self.jobs(ids)
            if all(r.status in FINAL for r in rows):
                break
            await asyncio.sleep(0.3)
        return ids

    def jobs(self, ids: list[int]):
        from models.db import run_sql

        return run_sql(self.db_url, "SELECT id, e164, status, result FROM notification_jobs WHERE id = ANY(:ids)",
                       ids=ids)

    def attempts(self, ids: list[int]):
        from models.db import run_sql

        return run_sql(self.db_url, "SELECT j.id, j.e164, j.status, a.channel_id, a.cause FROM notification_jobs j "
                                    "LEFT JOIN notification_attempts a ON a.job_id = j.id WHERE j.id = ANY(:ids)",
                       ids=ids)

    def utterances(self, ids: list[int]):
        from models.db import run_sql

        return run_sql(self.db_url, "SELECT a.job_id, u.seq, u.step, u.transcript, u.intent, u.asr_ms FROM utterances u "
                                    "JOIN notification_attempts a ON a.id = u.attempt_id WHERE a.job_id = ANY(:ids) "
                                    "ORDER BY a.job_id, u.seq", ids=ids)

    async def phase(self, name: str, scenario: str, concurrent: int, rounds: int) -> None:
        await self.far_end(scenario)
        log_from = len(self.robot.log_text())
        m0, load0, t0 = _machine_busy(), os.getloadavg()[0], time.monotonic()
        ids: list[int] = []
        for r in range(rounds):
            ids += await self.round(concurrent, self.args.lead)
        m1 = _machine_busy()
        text = self.robot.log_text()[log_from:]
        rows = self.jobs(ids)
        statuses: dict[str, int] = {}
        for row in rows:
            statuses[row.status] = statuses.get(row.status, 0) + 1
        ph = {"name": name, "scenario": scenario, "concurrent": concurrent, "rounds": rounds, "calls": len(ids),
              "ids": ids, "statuses": statuses, "wall_s": round(time.monotonic() - t0, 1),
              "load_average_start": round(load0, 2),
              "machine_cpu_pct_of_200": round(100 * os.cpu_count() * (m1[0] - m0[0]) / max(1.0, m1[1] - m0[1]), 1),
              "log_after_speech_ms": [float(x) for x in re.findall(r"event=reply_started after_speech_ms=([\d.]+)", text)],
              "log_asr_ms": [float(x) for x in re.findall(r"event=utterance .*?asr_ms=([\d.]+)", text)],
              "asr_failed": len(re.findall(r"event=asr_failed", text)),
              "utterances": [dict(u._mapping) for u in self.utterances(ids)]}
        self.phases.append(ph)
        la = pct(ph["log_after_speech_ms"])
        log(f"{name}: {len(ids)} calls {statuses}; robot log after_speech_ms p50 {la['p50']} p90 {la['p90']} "
            f"(n {la['n']}); asr_ms p50 {pct(ph['log_asr_ms'])['p50']}; {ph['wall_s']} s")

    async def run(self) -> dict:
        a = self.args
        started = datetime.now().astimezone()
        load0 = os.getloadavg()
        await self.phase("yes, one call at a time", "yes", 1, a.rounds)
        if a.rounds_no:
            await self.phase("no + Monday morning, one call at a time", "no_monday", 1, a.rounds_no)
        for n in a.ladder:
            if n == 1 and a.rounds:
                continue                         # the first phase is the 1-call step
            await self.phase(f"{n} speaking calls at once", "yes", n, a.ladder_rounds)
        if self.far is not None:
            await self.far.stop()
            self.far = None
        await asyncio.sleep(1.0)
        self.stop_tcpdump()

        wire, plays = analyse(self.pcap)
        all_ids = [i for ph in self.phases for i in ph["ids"]]
        chan_of_number = {r.e164.lstrip("+"): r.channel_id for r in self.attempts(all_ids) if r.channel_id}
        job_of_number = {r.e164.lstrip("+"): r.id for r in self.attempts(all_ids)}
        per_job: dict[int, list[dict]] = {}
        for c in wire.values():
            job = job_of_number.get(c.number)
            if job is None:
                continue
            per_job[job] = replies(c, plays.get(chan_of_number.get(c.number, ""), []))
        for ph in self.phases:
            rows = [r for j in ph["ids"] for r in per_job.get(j, [])]
            ph["wire"] = {k: pct([r[k] for r in rows if k in r]) for k in ("to_play_ms", "to_audio_ms", "to_speech_ms")}
            ph["wire_bursts"] = len(rows)
            ph["wire_first_reply"] = pct([per_job[j][0]["to_audio_ms"] for j in ph["ids"]
                                          if per_job.get(j) and "to_audio_ms" in per_job[j][0]])
            ph["log"] = {"after_speech_ms": pct(ph["log_after_speech_ms"]), "asr_ms": pct(ph["log_asr_ms"])}
        dropped = re.search(r"(\d+) packets? dropped by kernel", (self.work / "tcpdump.stderr").read_text())
        return {"date": started.isoformat(timespec="seconds"), "load_average_start": load0,
                "load_average_end": os.getloadavg(), "snr_db": a.snr, "lead_s": a.lead,
                "capture_dropped_by_kernel": int(dropped.group(1)) if dropped else None,
                "command": "scripts/bench_dialog.py " + " ".join(sys.argv[1:]), "phases": self.phases}

    def stop_tcpdump(self) -> None:
        if self.tcpdump is not None and self.tcpdump.poll() is None:
            self.tcpdump.send_signal(signal.SIGTERM)
            try:
                self.tcpdump.wait(10)
            except subprocess.TimeoutExpired:
                self.tcpdump.kill()
                self.tcpdump.wait()

    async def teardown(self) -> None:
        for what, fn in (("tcpdump", lambda: self.stop_tcpdump()),):
            try:
                fn()
            except Exception as exc:
                log(f"stopping {what}: {exc}")
        if self.robot is not None:
            try:
                await asyncio.to_thread(self.robot.stop)
            except Exception as exc:
                log(f"stopping the robot: {exc}")
        if self.far is not None:
            try:
                await self.far.stop()
            except Exception as exc:
                log(f"stopping the far end: {exc}")
        if self.instance is not None:
            try:
                self.instance.stop()
            except Exception as exc:
                log(f"stopping asterisk {INSTANCE}: {exc}")
        if self.server_url and not self.args.keep_db:
            from ivr.stack.postgres import drop_database

            try:
                drop_database(self.server_url, DB_NAME)
            except Exception as exc:
                log(f"dropping {DB_NAME}: {exc}")
        log("cleaned up")


def report(r: dict) -> str:
    lines = [f"Command: `.cache/venv/bin/python {r['command'].strip()}`  ",
             f"Run {r['date']}, load average {r['load_average_start'][0]:.2f} at the start, "
             f"{r['load_average_end'][0]:.2f} at the end; capture drops {r['capture_dropped_by_kernel']}"
             + (f"; answers with white noise at {r['snr_db']:g} dB" if r["snr_db"] else "; clean answers"), "",
             "| phase | calls | statuses | wire: end of speech → reply RTP p50 / p90 / max (ms) | → reply speech p50 / p90 | "
             "→ play request p50 / p90 | robot log after_speech_ms p50 / p90 / max | asr_ms p50 / p90 | machine CPU (of 200 %) |",
             "|---|---|---|---|---|---|---|---|---|"]
    base = None
    for ph in r["phases"]:
        w, lg = ph["wire"], ph["log"]
        failed = f", asr_failed {ph['asr_failed']}" if ph["asr_failed"] else ""
        if ph["scenario"] == "yes" and ph["concurrent"] == 1:
            base = w["to_audio_ms"]["p50"]
        lines.append(f"| {ph['name']} | {ph['calls']} | {ph['statuses']}{failed} | {w['to_audio_ms']['p50']} / {w['to_audio_ms']['p90']} / "
                     f"{w['to_audio_ms']['max']} (n {w['to_audio_ms']['n']}) | {w['to_speech_ms']['p50']} / "
                     f"{w['to_speech_ms']['p90']} | {w['to_play_ms']['p50']} / {w['to_play_ms']['p90']} | "
                     f"{lg['after_speech_ms']['p50']} / {lg['after_speech_ms']['p90']} / {lg['after_speech_ms']['max']} "
                     f"(n {lg['after_speech_ms']['n']}) | {lg['asr_ms']['p50']} / {lg['asr_ms']['p90']} | "
                     f"{ph['machine_cpu_pct_of_200']} % |")
    if base:
        lines += ["", "Ladder (wire p50 / 1-call p50): " + ", ".join(
            f"{ph['concurrent']} → {ph['wire']['to_audio_ms']['p50'] / base:.2f}×" for ph in r["phases"]
            if ph["scenario"] == "yes" and ph["wire"]["to_audio_ms"]["p50"])]
    return "\n".join(lines)


async def amain(args) -> int:
    bench = Bench(args)
    result = None
    try:
        await bench.setup()
        result = await bench.run()
    finally:
        await bench.teardown()
    text = report(result)
    print()
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, ensure_ascii=False, indent=1, default=str) + "\n")
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6, help="'yes' calls one at a time (the 1-call baseline)")
    ap.add_argument("--rounds-no", type=int, default=3, help="'no + Monday morning' calls one at a time")
    ap.add_argument("--ladder", type=lambda s: [int(x) for x in s.split(",") if x], default=[1, 2, 4, 8])
    ap.add_argument("--ladder-rounds", type=int, default=2)
    ap.add_argument("--lead", type=float, default=2.0, help="seconds from job creation to its due time")
    ap.add_argument("--snr", type=float, default=None, help="white noise on the answers at this SNR (dB)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--keep-db", action="store_true")
    args = ap.parse_args()

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    log(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
