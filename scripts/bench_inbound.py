#!/usr/bin/env python3
"""Benchmark: inbound throughput with real Asterisk, the real controller and Postgres.

sipp calls the public number through the carrier trunk at rising rates (calls per second), each
rate held for --duration seconds; every call comes from a unique Russian mobile number (an unknown
caller: looked up, given a client card, routed by the rules to current_sales). The controller
rings a free operator (PJSIP/<ext>); the operators' phones are a few sipp processes that answer at
once; the caller hangs up --hold seconds after the IVR answered.

A call succeeded when sipp saw 200 and a normal end (its BYE answered) AND its row in the calls
table says result 'answered' with an operator and not degraded. Anything else is a failure. The
run stops at the first rate with a failure; the result is the highest clean rate, the maximum
concurrent calls (sipp's CurrentCall, Asterisk's `core show channels count`), CPU of the
controller and of Asterisk, and p50/p95 of calls.wait_seconds (flow start -> operator answered).

Usage: scripts/bench_inbound.py [--rates 10,15,20,25,30,40,50,60,80] [--duration 60] [--hold 4]
                                [--operators 300] [--uas 4] [--json OUT] [--keep-db]
Smoke run: scripts/bench_inbound.py --duration 10 --rates 5,10

It starts its own Asterisk instance "bench-inbound" (ports 2xxxx, RTP 40000-44999), its own
database ivr_bench_inbound (dropped at the end unless --keep-db), its own controller and sipp
processes (SIP/media ports 45000-45299), and stops all of them at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ivr.config import PROJECT_ROOT, Settings  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent / "bench"
DB_NAME = "ivr_bench_inbound"
INSTANCE = "bench-inbound"
UAC_SIP_PORT, UAC_MEDIA_PORT = 45000, 45010
UAS_SIP_BASE, UAS_MEDIA_BASE = 45100, 45200
CLK_TCK = os.sysconf("SC_CLK_TCK")

RULES = """
settings:
  default_department: current_sales
  active_sales_department: active_sales
  first_deal_threshold: 1
  reaction_standard_seconds: 5
  autopause: {misses: 3, ring_seconds: 5}
  summon: {department: current_sales, confirm_minutes: 4}
departments:
  current_sales: {name: "Отдел текущих продаж", strategy: longest_idle, ring_timeout: 5, max_wait: 30,
                  wrapup_seconds: 0, fallback: current_service, timezone: Europe/Moscow, holidays: null}
  active_sales: {name: "Отдел активных продаж", strategy: longest_idle, ring_timeout: 5, max_wait: 30,
                 wrapup_seconds: 0, fallback: current_sales, timezone: Europe/Moscow, holidays: null}
  current_service: {name: "Отдел текущего обслуживания", strategy: fewest_calls, ring_timeout: 5, max_wait: 30,
                    wrapup_seconds: 0, timezone: Europe/Moscow, holidays: null}
  retail: {name: "Розничный зал", strategy: longest_idle, ring_timeout: 5, max_wait: 30, wrapup_seconds: 0,
           timezone: Europe/Moscow, holidays: null}
  documents: {name: "Оформление документов", strategy: longest_idle, ring_timeout: 5, max_wait: 30,
              wrapup_seconds: 0, timezone: Europe/Moscow, holidays: null}
segments: {retail: retail, small_wholesale: current_sales, wholesale: current_sales, large_wholesale: current_sales}
rules:
  - name: called_back_by_active_sales
    when: {called_by_active_sales: true}
    route: {to: active_sales_manager, then: active_sales}
  - name: client_with_deals
    when: {has_deals: true}
    route: {to: assigned_operator, then: current_service}
  - name: known_by_segment
    when: {known: true}
    route: {to: segment_department}
  - name: unknown_caller
    when: {}
    route: {department: current_sales}
"""


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def bench_settings(database_url: str | None = None) -> Settings:
    return Settings(
        database_url=database_url, ari_password=secrets.token_urlsafe(18), ami_secret=secrets.token_urlsafe(18),
        asterisk_instance=INSTANCE, sip_port=25060, http_port=28088, ami_port=25038, agi_port=24573,
        health_port=28090, carrier_port=25090, rtp_start=40000, rtp_end=44999,
        state_dir=PROJECT_ROOT / "var" / INSTANCE,
    )


def _sql(url: str, statement: str, **params):
    from models.db import run_sql

    return run_sql(url, statement, **params)


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cpu_ticks(pid: int | None) -> float | None:
    """utime + stime of a process, in seconds."""
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return float(sum(parts) - idle), float(sum(parts))


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return round(values[lo] + (values[hi] - values[lo]) * (k - lo), 3)


class Sipp:
    """One sipp process (own session, killed by its process group)."""

    def __init__(self, args: list[str], workdir: Path, name: str):
        self.workdir = workdir
        self.name = name
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(["sipp", *args], cwd=workdir, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(workdir / f"{name}.stderr", "wb"),
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 3)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


@dataclass
class StepResult:
    rate: int
    duration: float
    calls: int
    sipp_success: int = 0
    sipp_failed: int = 0
    sipp_created: int = 0
    db_rows: int = 0
    db_answered: int = 0
    db_degraded: int = 0
    db_other: dict = field(default_factory=dict)
    failed: int = 0
    achieved_cps: float | None = None
    max_concurrent_sipp: int = 0
    max_channels_asterisk: int = 0
    max_calls_asterisk: int = 0
    controller_cpu_pct: float | None = None
    asterisk_cpu_pct: float | None = None
    sipp_cpu_pct: float | None = None
    machine_cpu_pct: float | None = None
    wait_p50: float | None = None
    wait_p95: float | None = None
    wait_max: float | None = None
    sipp_errors: list = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.failed == 0


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = PROJECT_ROOT / "var" / INSTANCE
        self.server_url: str | None = None
        self.db_url: str | None = None
        self.settings: Settings | None = None
        self.instance = None
        self.controller = None
        self.uas: list[Sipp] = []
        self.uac: Sipp | None = None
        self.number_base = 10_000 + secrets.randbelow(4_000_000)  # 7916 + 7 digits, unique in the run

    # --- set-up ----------------------------------------------------------------------------
    def setup(self) -> None:
        from ivr.stack.asterisk import AsteriskInstance
        from ivr.stack.operators import sync_operators
        from ivr.stack.postgres import create_database, drop_database, ensure_database
        from models.migrate import upgrade
        from routing.loader import parse
        from routing.store import apply_ruleset

        if shutil.which("sipp") is None:
            raise SystemExit("sipp is not installed")
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        ports = [UAC_SIP_PORT, UAC_MEDIA_PORT] + [UAS_SIP_BASE + i for i in range(self.args.uas)] + \
                [UAS_MEDIA_BASE + 10 * i for i in range(self.args.uas)]
        busy = [p for p in ports if not _udp_free(p)]
        if busy:
            raise SystemExit(f"UDP ports in use: {busy}; a previous bench still running?")

        self.server_url = ensure_database(Settings(database_url=os.environ.get("DATABASE_URL") or None))
        drop_database(self.server_url, DB_NAME)
        self.db_url = create_database(self.server_url, DB_NAME)
        upgrade(self.db_url)
        apply_ruleset(self.db_url, parse(RULES, "bench-rules.yaml"), RULES, "bench_inbound")
        self.settings = bench_settings(self.db_url)
        log(f"database {DB_NAME} ready, rules applied")

        for i in range(self.args.uas):
            sip_port, media_port = UAS_SIP_BASE + i, UAS_MEDIA_BASE + 10 * i
            self.uas.append(Sipp(["-sf", str(BENCH_DIR / "uas.xml"), "-i", "127.0.0.1", "-p", str(sip_port),
                                  "-mi", "127.0.0.1", "-mp", str(media_port), "-nostdin",
                                  "-trace_err", "-error_file", str(self.work / f"uas{i}-errors.log")],
                                 self.work, f"uas{i}"))
        deadline = time.monotonic() + 5
        while any(_udp_free(UAS_SIP_BASE + i) for i in range(self.args.uas)):
            if time.monotonic() > deadline or not all(u.running() for u in self.uas):
                raise RuntimeError(f"sipp answerers did not start; see {self.work}/uas*.stderr")
            time.sleep(0.05)

        rows = [{"n": f"Оператор {i:03d}", "e": str(6000 + i), "c": f"sip:127.0.0.1:{UAS_SIP_BASE + i % self.args.uas}"}
                for i in range(1, self.args.operators + 1)]
        from sqlalchemy import text

        from models.db import make_engine

        engine = make_engine(self.db_url)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO operators (name, extension, department_id, sip_contact, status) VALUES "
                              "(:n, :e, (SELECT id FROM departments WHERE code = 'current_sales'), :c, 'available')"),
                         rows)
        engine.dispose()
        log(f"{self.args.operators} operators in current_sales on {self.args.uas} sipp answerers")

        self.instance = AsteriskInstance(self.settings)
        self.instance.ensure_image()
        self.instance.stop()
        n = sync_operators(self.settings, self.db_url)  # renders the config (not running yet: no reload)
        self.instance.start()
        log(f"asterisk instance {INSTANCE} up ({n} operator endpoints)")

        from ivr.runner import ControllerProcess

        self.controller = ControllerProcess(self.settings, self.work / "controller.log").start()
        self.controller.wait_healthy()
        log(f"controller up (pid {self.controller.proc.pid})")

    # --- one step ----------------------------------------------------------------------------
    def numbers(self, count: int) -> list[str]:
        out = [f"7916{self.number_base + i:07d}" for i in range(count)]
        self.number_base += count
        return out

    def run_step(self, rate: int, duration: float, label: str) -> StepResult:
        assert self.settings and self.instance and self.controller and self.db_url
        total = max(1, int(round(rate * duration)))
        numbers = self.numbers(total)
        stepdir = self.work / label
        stepdir.mkdir(parents=True, exist_ok=True)
        inf = stepdir / "callers.csv"
        inf.write_text("SEQUENTIAL\n" + "".join(f"{n};\n" for n in numbers))
        stat_file = stepdir / "stats.csv"
        err_file = stepdir / "errors.log"
        res = StepResult(rate=rate, duration=duration, calls=total)
        hold_ms = int(self.args.hold * 1000)
        target = f"{self.settings.bind_host}:{self.settings.sip_port}"
        # sipp's scheduler: -r RATE per -rp 1000 ms; -l bounds concurrency far above the need.
        scenario = stepdir / "uac.xml"
        scenario.write_text((BENCH_DIR / "uac.xml").read_text(encoding="iso-8859-1").replace("@HOLD_MS@", str(hold_ms)),
                            encoding="iso-8859-1")
        args = [target, "-sf", str(scenario), "-inf", str(inf), "-s", self.settings.public_number.lstrip("+"),
                "-r", str(rate), "-rp", "1000", "-m", str(total), "-l", str(max(500, rate * 20)),
                "-i", "127.0.0.1", "-p", str(UAC_SIP_PORT), "-mi", "127.0.0.1", "-mp", str(UAC_MEDIA_PORT),
                "-nostdin", "-timeout", f"{int(duration + self.args.hold + 90)}s", "-timeout_error",
                "-trace_stat", "-stf", str(stat_file), "-fd", "1",
                "-trace_err", "-error_file", str(err_file)]
        controller_pid = self.controller.proc.pid
        asterisk_pid = self.instance.pid()
        samples: list[tuple[int, int]] = []
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.wait(2.0):
                try:
                    out = self.instance.cli("core show channels count", timeout=5)
                except Exception:
                    continue
                ch = calls = 0
                for line in out.splitlines():
                    parts = line.split()
                    if len(parts) >= 3 and parts[0].isdigit() and parts[1] == "active":
                        if parts[2].startswith("channel"):
                            ch = int(parts[0])
                        elif parts[2].startswith("call"):
                            calls = int(parts[0])
                samples.append((ch, calls))

        c0, a0, m0 = _cpu_ticks(controller_pid), _cpu_ticks(asterisk_pid), _machine_busy()
        t0 = time.monotonic()
        self.uac = Sipp(args, stepdir, "uac")
        s0 = 0.0
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        load_end = t0 + duration + self.args.hold
        cpu_at_load_end = None
        limit = duration + self.args.hold + 120
        while self.uac.running():
            now = time.monotonic()
            if cpu_at_load_end is None and now >= load_end:
                cpu_at_load_end = (now, _cpu_ticks(controller_pid), _cpu_ticks(asterisk_pid),
                                   _cpu_ticks(self.uac.pid), _machine_busy())
            if now - t0 > limit:
                log(f"sipp still running after {limit:.0f}s: stopping it")
                self.uac.stop()
                break
            time.sleep(0.2)
        now = time.monotonic()
        if cpu_at_load_end is None:
            cpu_at_load_end = (now, _cpu_ticks(controller_pid), _cpu_ticks(asterisk_pid), None, _machine_busy())
        stop_sampling.set()
        sampler.join(5)
        elapsed = cpu_at_load_end[0] - t0
        if c0 is not None and cpu_at_load_end[1] is not None:
            res.controller_cpu_pct = round(100 * (cpu_at_load_end[1] - c0) / elapsed, 1)
        if a0 is not None and cpu_at_load_end[2] is not None:
            res.asterisk_cpu_pct = round(100 * (cpu_at_load_end[2] - a0) / elapsed, 1)
        if cpu_at_load_end[3] is not None:
            res.sipp_cpu_pct = round(100 * (cpu_at_load_end[3] - s0) / elapsed, 1)
        m1 = cpu_at_load_end[4]
        res.machine_cpu_pct = round(100 * os.cpu_count() * (m1[0] - m0[0]) / max(1.0, m1[1] - m0[1]), 1)
        if samples:
            res.max_channels_asterisk = max(s[0] for s in samples)
            res.max_calls_asterisk = max(s[1] for s in samples)
        self._read_sipp_stats(stat_file, res)
        try:
            res.sipp_errors = [ln for ln in err_file.read_text(errors="replace").splitlines()
                               if ln.strip() and not ln.startswith("-")][:10]
        except FileNotFoundError:
            pass
        self._read_db(numbers, res)
        res.failed = max(res.sipp_failed + (total - res.sipp_created), total - (res.db_answered - res.db_degraded))
        return res

    @staticmethod
    def _read_sipp_stats(stat_file: Path, res: StepResult) -> None:
        try:
            with open(stat_file, newline="") as fh:
                rows = list(csv.DictReader(fh, delimiter=";"))
        except FileNotFoundError:
            return
        if not rows:
            return
        last = rows[-1]
        res.sipp_success = int(last.get("SuccessfulCall(C)", 0) or 0)
        res.sipp_failed = int(last.get("FailedCall(C)", 0) or 0)
        res.sipp_created = int(last.get("TotalCallCreated", 0) or 0)
        res.max_concurrent_sipp = max(int(r.get("CurrentCall", 0) or 0) for r in rows)

    def _read_db(self, numbers: list[str], res: StepResult) -> None:
        e164 = ["+" + n for n in numbers]
        deadline = time.monotonic() + 30
        while True:  # the journal writes rows asynchronously: wait until every call has ended
            rows = _sql(self.db_url, "SELECT c.result, c.answered_by_operator_id, c.degraded, c.wait_seconds, "
                                     "c.started_at, c.ended_at FROM calls c WHERE c.from_e164 = ANY(:p)", p=e164)
            if (len(rows) >= len(numbers) and all(r.ended_at for r in rows)) or time.monotonic() > deadline:
                break
            time.sleep(1)
        res.db_rows = len(rows)
        other: dict[str, int] = {}
        waits = []
        for r in rows:
            if r.result == "answered" and r.answered_by_operator_id is not None:
                res.db_answered += 1
                res.db_degraded += bool(r.degraded)
                if r.wait_seconds is not None:
                    waits.append(float(r.wait_seconds))
            else:
                key = f"{r.result or 'none'}{' (not ended)' if not r.ended_at else ''}"
                other[key] = other.get(key, 0) + 1
        if len(rows) < len(numbers):
            other["no row"] = len(numbers) - len(rows)
        res.db_other = other
        res.wait_p50, res.wait_p95 = _percentile(waits, 0.5), _percentile(waits, 0.95)
        res.wait_max = round(max(waits), 3) if waits else None
        starts = sorted(r.started_at for r in rows)
        if len(starts) > 1:
            span = (starts[-1] - starts[0]).total_seconds()
            res.achieved_cps = round((len(starts) - 1) / span, 1) if span > 0 else None

    # --- tear-down ----------------------------------------------------------------------------
    def teardown(self) -> None:
        for proc in ([self.uac] if self.uac else []) + self.uas:
            try:
                proc.stop()
            except Exception as exc:  # keep tearing down
                log(f"stopping sipp {proc.name}: {exc}")
        if self.controller is not None:
            try:
                self.controller.stop()
            except Exception as exc:
                log(f"stopping the controller: {exc}")
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


def fmt(res: StepResult) -> str:
    return (f"rate {res.rate:>3} cps x {res.duration:.0f}s: {res.calls} calls, sipp ok {res.sipp_success} "
            f"failed {res.sipp_failed} created {res.sipp_created}; db answered {res.db_answered} "
            f"(degraded {res.db_degraded}) other {res.db_other or '-'}; FAILED {res.failed}; achieved "
            f"{res.achieved_cps} cps; concurrent sipp {res.max_concurrent_sipp}, asterisk channels "
            f"{res.max_channels_asterisk} calls {res.max_calls_asterisk}; cpu controller {res.controller_cpu_pct}% "
            f"asterisk {res.asterisk_cpu_pct}% sipp-uac {res.sipp_cpu_pct}% machine {res.machine_cpu_pct}%; "
            f"wait p50 {res.wait_p50}s p95 {res.wait_p95}s max {res.wait_max}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="10,15,20,25,30,40,50,60,80", help="comma-separated calls/s, rising")
    parser.add_argument("--duration", type=float, default=60, help="seconds each rate is held")
    parser.add_argument("--hold", type=float, default=4, help="seconds the caller stays after the answer")
    parser.add_argument("--operators", type=int, default=300)
    parser.add_argument("--uas", type=int, default=4, help="sipp answering processes")
    parser.add_argument("--pause", type=float, default=5, help="seconds between steps")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--keep-db", action="store_true", help=f"keep database {DB_NAME} afterwards")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",") if r.strip()]

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    log(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    bench = Bench(args)
    results: list[StepResult] = []
    try:
        bench.setup()
        warm = bench.run_step(2, 3, "warmup")
        log("warm-up: " + fmt(warm))
        for rate in rates:
            time.sleep(args.pause)
            log(f"rate {rate} cps for {args.duration:.0f}s (load average {os.getloadavg()[0]:.2f})")
            res = bench.run_step(rate, args.duration, f"rate-{rate}")
            results.append(res)
            log(fmt(res))
            for line in res.sipp_errors[:5]:
                log(f"  sipp error: {line[:200]}")
            if not res.clean:
                log(f"failures at {rate} cps: stopping")
                break
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        bench.teardown()

    clean = [r for r in results if r.clean]
    best = max(clean, key=lambda r: r.rate) if clean else None
    # Concurrency counts only while every call succeeded: calls piling up in a failing step
    # are not calls carried.
    max_conc = max((r.max_concurrent_sipp for r in clean), default=0)
    max_calls = max((r.max_calls_asterisk for r in clean), default=0)
    print()
    print(f"highest clean rate: {best.rate if best else 'none'} calls/s held {args.duration:.0f}s "
          f"(target >= 50: {'PASS' if best and best.rate >= 50 else 'BELOW TARGET'})")
    print(f"max concurrent calls with 0 failures: sipp {max_conc}, asterisk {max_calls} calls "
          f"(target >= 200: {'PASS' if max(max_conc, max_calls) >= 200 else 'BELOW TARGET'})")
    failing = [r for r in results if not r.clean]
    if failing:
        print(f"(the failing step at {failing[0].rate} calls/s piled up to {failing[0].max_concurrent_sipp} "
              f"concurrent calls while failing {failing[0].failed} of {failing[0].calls})")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "steps": [asdict(r) | {"clean": r.clean} for r in results]},
                                        indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
