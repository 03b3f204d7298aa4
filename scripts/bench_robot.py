#!/usr/bin/env python3
"""Benchmark (issue 4): N concurrent confirmation calls end to end, answer -> first prompt audio.

The real stack on one box: its own Asterisk instance "bench-robot" (ports 253xx/283xx, RTP
46000-46999), its own database ivr_bench_robot (recreated and migrated), its own ``ivr-robot``
process (RobotProcess, clock inside the call window via IVR_CLOCK_START), and one sipp answering
phone (SippAnswerer) on the carrier port as every client's phone: it answers at once, presses 1
after --dtmf-delay seconds and hangs up after --hold seconds if the robot has not.

N jobs for N distinct numbers are created over the robot's HTTP API, all due at the same robot
instant; the dialer (max_channels >= N, --cps originates per second) places them.

Measured on the wire: tcpdump on lo captures the carrier SIP port, Asterisk's RTP range and the
ARI HTTP port. Per call (Call-ID): the time the far end sent 200 OK to the INVITE, the time the
robot's ``POST /ari/channels/<id>/play`` went to Asterisk, and the first RTP packet Asterisk sent
from that call's RTP port (the m= port of its INVITE's SDP) to the far end's media port (the m=
port of the 200 OK's SDP). answer -> first audio = first RTP - 200 OK. The script also checks,
for every call, that no RTP left Asterisk before the play request (a Stasis channel with nothing
playing sends no RTP, so the first RTP packet *is* the prompt). The robot's own log figure
(``event=prompt_started answer_to_play_ms``: StasisStart received -> play request returned) is
reported next to it. A control call straight over ARI (own Stasis app, same far end) stays
--silence seconds with nothing playing before a prompt is played: the capture shows whether
Asterisk sends any RTP to an answered Stasis channel before a playback starts.

A call counts as confirmed when its job ends in status ``confirmed``. Exit code 1 unless every
job is confirmed.

Usage: scripts/bench_robot.py [--calls 50] [--cps 25] [--dtmf-delay 3] [--json OUT] [--keep-db]
                              [--distinct-prompts] [--tts-http] [--lead 8]
--distinct-prompts: every job names a different client (one synthesis and cache file per call);
--tts-http: Asterisk fetches the prompts from the robot's /tts/ over HTTP (IVR_TTS_HTTP_BASE).
Needs tcpdump (apt-get install tcpdump) and root (capture on lo).
Everything it started is stopped at the end (also on Ctrl-C); the database is dropped unless
--keep-db.
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
import socket
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402

from ivr.config import PROJECT_ROOT, Settings  # noqa: E402

DB_NAME = "ivr_bench_robot"
INSTANCE = "bench-robot"
PORTS = dict(sip_port=25360, http_port=28388, ami_port=25338, agi_port=24873, health_port=28390,
             carrier_port=25390, api_port=28391, rtp_start=46000, rtp_end=46999)
MSK = timezone(timedelta(hours=3))
CLOCK = datetime(2027, 3, 2, 12, 0, tzinfo=MSK)        # a Tuesday, inside 10:00-19:00 Moscow
VARS = {"sent_date": "07.02", "sent_how": "заказным письмом", "documents": "бухгалтерские документы за декабрь"}
NAMES = ["Пётр", "Иван", "Анна", "Мария", "Сергей", "Ольга", "Алексей", "Елена", "Дмитрий", "Наталья"]
PATRONYMICS = ["Николаевич", "Петрович", "Сергеевич", "Ивановна", "Алексеевна", "Дмитриевич", "Андреевна"]
FINAL = {"confirmed", "not_received", "failed", "expired", "no_action", "scheduled", "cancelled"}


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return round(values[lo] + (values[hi] - values[lo]) * (k - lo), 1)


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _tcp_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _machine_busy() -> tuple[float, float]:
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return float(sum(parts) - idle), float(sum(parts))


# --- pcap ---------------------------------------------------------------------------------------

def read_pcap(path: Path):
    """Yield (time, src_port, dst_port, proto, payload) of IPv4 UDP/TCP packets in a pcap file."""
    data = path.read_bytes()
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a pcap file")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    link_len = {1: 14, 113: 16, 276: 20, 0: 4}.get(linktype)
    if link_len is None:
        raise ValueError(f"{path}: link type {linktype} not handled")
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(endian + "IIII", data[pos:pos + 16])
        pkt = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        t = sec + frac / (1e9 if nano else 1e6)
        ip = pkt[link_len:]
        if len(ip) < 20 or ip[0] >> 4 != 4:
            continue
        ihl = (ip[0] & 0x0F) * 4
        proto = ip[9]
        total = struct.unpack("!H", ip[2:4])[0]
        l4 = ip[ihl:total]
        if proto == 17 and len(l4) >= 8:
            sport, dport = struct.unpack("!HH", l4[:4])
            yield t, sport, dport, "udp", l4[8:]
        elif proto == 6 and len(l4) >= 20:
            sport, dport = struct.unpack("!HH", l4[:4])
            off = (l4[12] >> 4) * 4
            yield t, sport, dport, "tcp", l4[off:]


def _ulaw(b: int) -> int:
    b = ~b & 0xFF
    mag = ((((b & 0x0F) << 3) + 0x84) << ((b >> 4) & 7)) - 0x84
    return -mag if b & 0x80 else mag


ULAW_ABS = [abs(_ulaw(b)) for b in range(256)]
SPEECH_LEVEL = 1000     # |sample| above this (16-bit scale) counts as speech, not silence/dither


_HDR = re.compile(rb"^(call-id|i|cseq):\s*(.+?)\r?$", re.I | re.M)
_M_AUDIO = re.compile(rb"^m=audio (\d+)", re.M)
_PLAY = re.compile(rb"^POST /ari/channels/([A-Za-z0-9._-]+)/play")


@dataclass
class WireCall:
    call_id: str
    number: str = ""
    asterisk_rtp_port: int | None = None
    far_media_port: int | None = None
    invite_t: float | None = None
    answer_t: float | None = None       # first 200 OK (INVITE) sent by the far end
    play_t: float | None = None         # the robot's POST .../play on the wire
    first_rtp_t: float | None = None    # first RTP from Asterisk to the far end
    first_rtp_pt: int | None = None
    rtp_before_play: int = 0            # RTP packets Asterisk sent before the play request
    first_speech_t: float | None = None  # first RTP packet with a sample above SPEECH_LEVEL

    @property
    def answer_to_audio_ms(self) -> float | None:
        if self.answer_t is None or self.first_rtp_t is None:
            return None
        return (self.first_rtp_t - self.answer_t) * 1000


def analyse(pcap: Path, carrier_port: int, http_port: int, rtp_range: tuple[int, int],
            channel_of_number: dict[str, str]) -> tuple[dict[str, WireCall], int]:
    calls: dict[str, WireCall] = {}
    by_asterisk_port: dict[int, list[WireCall]] = {}   # a port is reused by later calls
    plays: dict[str, float] = {}
    rtp_packets: list[tuple[float, int, int, int]] = []
    for t, sport, dport, proto, payload in read_pcap(pcap):
        if proto == "tcp":
            if dport == http_port and payload.startswith(b"POST /ari/channels/"):
                m = _PLAY.match(payload)
                if m:
                    plays.setdefault(m.group(1).decode(), t)
            continue
        if carrier_port in (sport, dport):
            first = payload.split(b"\r\n", 1)[0]
            hdrs = {k.lower(): v.strip() for k, v in _HDR.findall(payload)}
            call_id = (hdrs.get(b"call-id") or hdrs.get(b"i") or b"").decode(errors="replace")
            if not call_id:
                continue
            if dport == carrier_port and first.startswith(b"INVITE "):
                c = calls.setdefault(call_id, WireCall(call_id))
                if c.invite_t is None:
                    c.invite_t = t
                    uri = first.split()[1].decode(errors="replace")
                    c.number = uri.split(":", 1)[1].split("@", 1)[0]
                    m = _M_AUDIO.search(payload)
                    if m:
                        c.asterisk_rtp_port = int(m.group(1))
                        by_asterisk_port.setdefault(c.asterisk_rtp_port, []).append(c)
            elif sport == carrier_port and first.startswith(b"SIP/2.0 200") and b"INVITE" in hdrs.get(b"cseq", b""):
                c = calls.get(call_id)
                if c is not None and c.answer_t is None:
                    c.answer_t = t
                    m = _M_AUDIO.search(payload)
                    if m:
                        c.far_media_port = int(m.group(1))
            continue
        if rtp_range[0] <= sport <= rtp_range[1] and len(payload) >= 12 and payload[0] >> 6 == 2:
            pt = payload[1] & 0x7F
            if 72 <= pt <= 76:          # RTCP (SR/RR/SDES/BYE/APP)
                continue
            rtp_packets.append((t, sport, dport, pt, payload[12:] if pt == 0 else b""))
    for c in calls.values():
        channel = channel_of_number.get(c.number)
        if channel:
            c.play_t = plays.get(channel)
    for t, sport, dport, pt, audio in rtp_packets:
        # the latest call invited on that port before this packet
        c = next((x for x in reversed(by_asterisk_port.get(sport, ())) if x.invite_t <= t), None)
        if c is None or dport != c.far_media_port or c.answer_t is None:
            continue
        if c.first_rtp_t is None:
            c.first_rtp_t, c.first_rtp_pt = t, pt
        if c.first_speech_t is None and audio and max(ULAW_ABS[b] for b in audio) > SPEECH_LEVEL:
            c.first_speech_t = t
        if c.play_t is not None and t < c.play_t:
            c.rtp_before_play += 1
    return calls, len(rtp_packets)


# --- the run ------------------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.work = PROJECT_ROOT / "var" / INSTANCE
        self.server_url: str | None = None
        self.db_url: str | None = None
        self.settings: Settings | None = None
        self.instance = None
        self.robot = None
        self.far = None
        self.tcpdump: subprocess.Popen | None = None
        self.pcap = self.work / "capture.pcap"
        self.robot_started_mono: float | None = None

    def robot_now(self) -> datetime:
        """The robot's clock (IVR_CLOCK_START + elapsed), as estimated here (slightly ahead)."""
        return CLOCK + timedelta(seconds=time.monotonic() - self.robot_started_mono)

    async def setup(self) -> None:
        from ivr.phones.sipp import SippAnswerer
        from ivr.runner import RobotProcess, robot_env
        from ivr.stack.asterisk import AsteriskInstance
        from ivr.stack.postgres import create_database, drop_database, ensure_database
        from models.migrate import upgrade

        for tool in ("sipp", "tcpdump"):
            if shutil.which(tool) is None:
                raise SystemExit(f"{tool} is not installed (apt-get install -y {tool})")
        if os.geteuid() != 0:
            raise SystemExit("capturing on lo needs root")
        probe = Settings(asterisk_instance=INSTANCE, state_dir=self.work, ari_password="x", ami_secret="x")
        leftover = AsteriskInstance(probe)
        leftover.stop()                                     # a previous interrupted run
        busy = [p for p in (PORTS["sip_port"], PORTS["carrier_port"]) if not _udp_free(p)] + \
               [p for p in (PORTS["http_port"], PORTS["ami_port"], PORTS["api_port"]) if not _tcp_free(p)]
        if busy:
            raise SystemExit(f"ports in use: {busy}; another bench_robot still running?")
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        shutil.rmtree(leftover.host_dir / "tts", ignore_errors=True)   # every run renders its prompts

        self.server_url = ensure_database(Settings(database_url=os.environ.get("DATABASE_URL") or None))
        drop_database(self.server_url, DB_NAME)
        self.db_url = create_database(self.server_url, DB_NAME)
        upgrade(self.db_url)
        log(f"database {DB_NAME} recreated and migrated")

        self.settings = Settings(
            database_url=self.db_url, ari_password=secrets.token_urlsafe(18), ami_secret=secrets.token_urlsafe(18),
            asterisk_instance=INSTANCE, state_dir=self.work, api_token=secrets.token_urlsafe(24),
            company_name="Эни", dialer_worker="bench", dialer_max_channels=max(self.args.calls + 10, 60),
            dialer_cps=self.args.cps, dialer_client_interval=0.0, dialer_ring_timeout=20,
            robot_digit_timeout=6.0, **PORTS)
        self.instance = AsteriskInstance(self.settings)
        self.instance.ensure_image()
        self.instance.install_config()
        self.instance.start()
        log(f"asterisk instance {INSTANCE} up (pid {self.instance.pid()})")

        self.far = await SippAnswerer(listen_port=self.settings.carrier_port, workdir=self.work, mode="answer",
                                      dtmf="1", dtmf_delay=self.args.dtmf_delay, hold=self.args.hold).start()
        log(f"far end: sipp answerer on 127.0.0.1:{self.settings.carrier_port}, media port {self.far.media_port}")

        env = robot_env(self.settings) | {"IVR_CLOCK_START": CLOCK.isoformat()}
        if self.args.tts_http:   # Asterisk fetches the prompts from the robot's /tts/ (res_http_media_cache)
            env["IVR_TTS_HTTP_BASE"] = f"http://{self.settings.bind_host}:{self.settings.api_port}/tts"
        self.robot_started_mono = time.monotonic()
        self.robot = RobotProcess(self.settings, self.work / "robot.log", env_overrides=env).start()
        await asyncio.to_thread(self.robot.wait_healthy, 60)
        log(f"ivr-robot up (pid {self.robot.proc.pid}), max_channels {self.settings.dialer_max_channels}, "
            f"cps {self.settings.dialer_cps}")

        rtp = f"{PORTS['rtp_start']}-{PORTS['rtp_end']}"
        bpf = f"(udp and (port {PORTS['carrier_port']} or portrange {rtp})) or (tcp dst port {PORTS['http_port']})"
        self.tcpdump = subprocess.Popen(["tcpdump", "-i", "lo", "-n", "-U", "-B", "16384", "-w", str(self.pcap), bpf],
                                        stdout=subprocess.DEVNULL, stderr=open(self.work / "tcpdump.stderr", "wb"),
                                        start_new_session=True)
        deadline = time.monotonic() + 10
        while b"listening on" not in (self.work / "tcpdump.stderr").read_bytes():
            if self.tcpdump.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("tcpdump did not start: " + (self.work / "tcpdump.stderr").read_text())
            await asyncio.sleep(0.05)
        log("tcpdump capturing on lo")

    async def create_jobs(self) -> dict[str, int]:
        """N jobs for N distinct numbers, all due at the same robot instant."""
        s = self.settings
        base = 10_000 + secrets.randbelow(9_000_000 - self.args.calls)
        numbers = [f"7916{base + i:07d}" for i in range(self.args.calls)]
        due = (self.robot_now() + timedelta(seconds=self.args.lead)).isoformat()
        jobs: dict[str, int] = {}
        url = f"http://{s.bind_host}:{s.api_port}/v1/notifications"
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {s.api_token}"}) as http:
            async def one(i: int, number: str) -> None:
                name = NAMES[i % len(NAMES)] + " " + PATRONYMICS[i // len(NAMES) % len(PATRONYMICS)] \
                    if self.args.distinct_prompts else "Пётр Николаевич"
                body = {"phone": number, "template": "documents_sent", "channel": "call",
                        "variables": {"address_name": name, **VARS},
                        "external_id": f"bench-{uuid.uuid4().hex}", "earliest_at": due}
                async with http.post(url, json=body) as r:
                    payload = await r.json()
                    if r.status != 201:
                        raise RuntimeError(f"POST /v1/notifications for {number}: {r.status} {payload}")
                    jobs[number] = payload["id"]
            await asyncio.gather(*(one(i, n) for i, n in enumerate(numbers)))
        log(f"{len(jobs)} jobs created, all due at robot time {due} (in ~{self.args.lead:.0f} s)")
        return jobs

    def job_rows(self, job_ids: list[int]):
        from models.db import run_sql

        return run_sql(self.db_url, "SELECT j.id, j.e164, j.status, j.result, a.channel_id, a.cause, a.digits, "
                                    "a.started_at, a.answered_at, a.ended_at FROM notification_jobs j "
                                    "LEFT JOIN notification_attempts a ON a.job_id = j.id "
                                    "WHERE j.id = ANY(:ids) ORDER BY j.id, a.attempt_no", ids=job_ids)

    async def run(self) -> dict:
        m0 = _machine_busy()
        load0 = os.getloadavg()[0]
        jobs = await self.create_jobs()
        t0 = time.monotonic()
        deadline = t0 + self.args.lead + 30 + self.args.hold + 60
        ids = list(jobs.values())
        while True:
            rows = self.job_rows(ids)
            done = [r for r in rows if r.status in FINAL and r.status != "scheduled" or
                    (r.status == "scheduled" and r.ended_at is not None)]
            if len(done) >= len(ids) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        wall = time.monotonic() - t0
        m1 = _machine_busy()
        verify_number, verify_channel = await self.control_call()
        try:
            health = await self.robot.fetch_health()
        except Exception as exc:     # only for the report
            health = {"error": str(exc)}
        await asyncio.sleep(1.0)                            # let the last packets reach the capture
        self.stop_tcpdump()

        statuses: dict[str, int] = {}
        for r in rows:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        confirmed = sum(1 for r in rows if r.status == "confirmed")
        starts = [r.started_at for r in rows if r.started_at]
        ends = [r.ended_at for r in rows if r.ended_at]
        calls_span = (max(ends) - min(starts)).total_seconds() if starts and ends else None
        channel_of_number = {r.e164.lstrip("+"): r.channel_id for r in rows if r.channel_id}

        wire, rtp_total = analyse(self.pcap, PORTS["carrier_port"], PORTS["http_port"],
                                  (PORTS["rtp_start"], PORTS["rtp_end"]),
                                  channel_of_number | {verify_number: verify_channel})
        ours = [c for c in wire.values() if c.number in channel_of_number]
        invites = sorted(c.invite_t for c in ours if c.invite_t)
        ctl = next((c for c in wire.values() if c.number == verify_number), None)
        control = None
        if ctl is not None and ctl.answer_t and ctl.play_t:
            control = {"silence_before_play_ms": round((ctl.play_t - ctl.answer_t) * 1000, 1),
                       "rtp_packets_before_play": ctl.rtp_before_play,
                       "play_request_to_first_rtp_ms": round((ctl.first_rtp_t - ctl.play_t) * 1000, 1)
                       if ctl.first_rtp_t else None}
        a2a = [c.answer_to_audio_ms for c in ours if c.answer_to_audio_ms is not None]
        a2s = [(c.first_speech_t - c.answer_t) * 1000 for c in ours if c.first_speech_t and c.answer_t]
        a2p = [(c.play_t - c.answer_t) * 1000 for c in ours if c.play_t and c.answer_t]
        p2a = [(c.first_rtp_t - c.play_t) * 1000 for c in ours if c.play_t and c.first_rtp_t]
        before_play = sum(1 for c in ours if c.rtp_before_play)
        robot_ms = [float(x) for x in re.findall(r"event=prompt_started answer_to_play_ms=([\d.]+)",
                                                 self.robot.log_text())]
        far_calls = [c for c in self.far.calls if verify_number not in c.request_uri]
        answered = [c for c in far_calls if c.answered_at]
        edges = sorted([(c.answered_at, 1) for c in answered] +
                       [(c.ended_at, -1) for c in answered if c.ended_at])
        conc = peak = 0
        for _, d in edges:
            conc += d
            peak = max(peak, conc)
        dropped = re.search(r"(\d+) packets? dropped by kernel", (self.work / "tcpdump.stderr").read_text())
        mm = round(100 * os.cpu_count() * (m1[0] - m0[0]) / max(1.0, m1[1] - m0[1]), 1)
        return {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "calls": len(ids), "confirmed": confirmed, "statuses": statuses,
            "far_end_invites": len(far_calls), "far_end_answered": len(answered), "max_concurrent_answered": peak,
            "wall_s": round(wall, 1),
            "invite_span_s": round(invites[-1] - invites[0], 2) if invites else None, "calls_span_s": round(calls_span, 1) if calls_span else None,
            "measured_calls": len(a2a),
            "answer_to_audio_ms": {"p50": percentile(a2a, .5), "p95": percentile(a2a, .95),
                                   "max": round(max(a2a), 1) if a2a else None,
                                   "min": round(min(a2a), 1) if a2a else None},
            "answer_to_first_speech_ms": {"n": len(a2s), "p50": percentile(a2s, .5), "p95": percentile(a2s, .95),
                                          "max": round(max(a2s), 1) if a2s else None},
            "answer_to_play_request_ms": {"p50": percentile(a2p, .5), "p95": percentile(a2p, .95),
                                          "max": round(max(a2p), 1) if a2p else None},
            "play_request_to_audio_ms": {"p50": percentile(p2a, .5), "p95": percentile(p2a, .95),
                                         "max": round(max(p2a), 1) if p2a else None},
            "robot_log_answer_to_play_ms": {"n": len(robot_ms), "p50": percentile(robot_ms, .5),
                                            "p95": percentile(robot_ms, .95),
                                            "max": round(max(robot_ms), 1) if robot_ms else None},
            "tts_http_requests": (health.get("tts") or {}).get("http_requests"),
            "calls_with_rtp_before_play": before_play, "control_call": control, "rtp_packets_from_asterisk": rtp_total,
            "first_rtp_payload_types": sorted({c.first_rtp_pt for c in ours if c.first_rtp_pt is not None}),
            "capture_dropped_by_kernel": int(dropped.group(1)) if dropped else None,
            "load_average_start": round(load0, 2), "load_average_end": round(os.getloadavg()[0], 2),
            "machine_cpu_pct_of_200": mm, "cps": self.args.cps, "lead_s": self.args.lead,
            "tts_http": self.args.tts_http, "distinct_prompts": self.args.distinct_prompts, "dtmf_delay_s": self.args.dtmf_delay,
            "target_ms": 200,
        }

    async def control_call(self) -> tuple[str, str]:
        """One call straight over ARI (own Stasis app), answered by the same far end, left
        --silence seconds with nothing playing, then a prompt played: the capture shows whether
        Asterisk sends RTP to a Stasis channel before anything plays."""
        s = self.settings
        number = f"7916{secrets.randbelow(10**7):07d}"
        channel = f"bench-verify-{uuid.uuid4().hex[:8]}"
        app = "bench-verify"
        prompt = next((self.instance.host_dir / "tts").glob("??/*.sln"))
        sound = "sound:/" + prompt.relative_to(s.asterisk_root).with_suffix("").as_posix()
        base = f"http://{s.bind_host}:{s.http_port}/ari"
        auth = aiohttp.encode_basic_auth(s.ari_user, s.ari_password)
        async with aiohttp.ClientSession(headers={"Authorization": auth}) as http:
            async with http.ws_connect(f"ws://{s.bind_host}:{s.http_port}/ari/events?app={app}") as ws:
                async with http.post(f"{base}/channels", params={
                        "endpoint": f"PJSIP/{number}@{s.outbound_trunk}", "app": app, "channelId": channel,
                        "timeout": "20"}) as r:
                    if r.status >= 300:
                        raise RuntimeError(f"control call originate: {r.status} {await r.text()}")
                async with asyncio.timeout(30):
                    async for msg in ws:
                        event = json.loads(msg.data)
                        if event.get("type") == "StasisStart" and event.get("channel", {}).get("id") == channel:
                            break
                await asyncio.sleep(self.args.silence)
                async with http.post(f"{base}/channels/{channel}/play", params={"media": sound}) as r:
                    if r.status >= 300:
                        raise RuntimeError(f"control call play: {r.status} {await r.text()}")
                await asyncio.sleep(1.0)
                async with http.delete(f"{base}/channels/{channel}") as r:
                    pass
        log(f"control call {channel}: answered, {self.args.silence:.1f} s with nothing playing, then {sound}")
        return number, channel

    def stop_tcpdump(self) -> None:
        if self.tcpdump is not None and self.tcpdump.poll() is None:
            self.tcpdump.send_signal(signal.SIGTERM)
            try:
                self.tcpdump.wait(10)
            except subprocess.TimeoutExpired:
                self.tcpdump.kill()
                self.tcpdump.wait()

    async def teardown(self) -> None:
        try:
            self.stop_tcpdump()
        except Exception as exc:
            log(f"stopping tcpdump: {exc}")
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


def summary(r: dict) -> str:
    a, p, q, rl = (r["answer_to_audio_ms"], r["answer_to_play_request_ms"], r["play_request_to_audio_ms"],
                   r["robot_log_answer_to_play_ms"])
    ok = a["p95"] is not None and a["p95"] <= r["target_ms"]
    return "\n".join([
        f"calls {r['calls']}, confirmed {r['confirmed']} ({r['statuses']}); far end: {r['far_end_invites']} INVITEs, "
        f"{r['far_end_answered']} answered, max {r['max_concurrent_answered']} answered at once",
        f"wall time: first attempt claimed -> last call ended {r['calls_span_s']} s; the {r['calls']} INVITEs "
        f"went out within {r['invite_span_s']} s; job creation -> last final status {r['wall_s']} s "
        f"(includes the {r['lead_s']:.0f} s lead before the due time)",
        f"answer -> first audio packet (wire, {r['measured_calls']} calls): p50 {a['p50']} ms, p95 {a['p95']} ms, "
        f"max {a['max']} ms, min {a['min']} ms  (target p95 <= {r['target_ms']} ms: {'MET' if ok else 'MISSED'})",
        f"answer -> first packet with speech (a sample above {SPEECH_LEVEL}; the prompt's leading silence): "
        f"p50 {r['answer_to_first_speech_ms']['p50']}, p95 {r['answer_to_first_speech_ms']['p95']}, "
        f"max {r['answer_to_first_speech_ms']['max']} ms",
        f"  of which answer -> play request on the wire: p50 {p['p50']}, p95 {p['p95']}, max {p['max']} ms; "
        f"play request -> first RTP: p50 {q['p50']}, p95 {q['p95']}, max {q['max']} ms",
        f"prompt files fetched by Asterisk over HTTP (robot /health): {r['tts_http_requests']}",
        f"robot log answer_to_play_ms ({rl['n']} calls): p50 {rl['p50']}, p95 {rl['p95']}, max {rl['max']} ms",
        f"calls with RTP from Asterisk before the play request: {r['calls_with_rtp_before_play']} "
        f"(first RTP payload types {r['first_rtp_payload_types']}); capture drops {r['capture_dropped_by_kernel']}",
        f"control call (nothing played for a while after the answer): {r['control_call']}",
        f"machine CPU {r['machine_cpu_pct_of_200']} % of 200 % during the run; load average "
        f"{r['load_average_start']} -> {r['load_average_end']}",
    ])


async def amain(args) -> int:
    bench = Bench(args)
    result = None
    try:
        await bench.setup()
        result = await bench.run()
    finally:
        await bench.teardown()
    print()
    print(summary(result))
    print(json.dumps(result, ensure_ascii=False, sort_keys=True))
    if args.json:
        args.json.write_text(json.dumps(result, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
    return 0 if result["confirmed"] == result["calls"] else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--cps", type=float, default=25.0, help="dialer originates per second")
    parser.add_argument("--dtmf-delay", type=float, default=3.0, help="seconds after the answer the far end presses 1")
    parser.add_argument("--hold", type=float, default=30.0, help="the far end hangs up after this if the robot has not")
    parser.add_argument("--lead", type=float, default=8.0, help="seconds from job creation to their due time")
    parser.add_argument("--distinct-prompts", action="store_true",
                        help="a different name in every prompt (one synthesis per call) instead of one text")
    parser.add_argument("--tts-http", action="store_true",
                        help="Asterisk plays the prompts over HTTP from the robot (IVR_TTS_HTTP_BASE)")
    parser.add_argument("--silence", type=float, default=2.0,
                        help="control call: seconds with nothing playing after the answer")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--keep-db", action="store_true", help=f"keep database {DB_NAME}")
    args = parser.parse_args()

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    log(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
