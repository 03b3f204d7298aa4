#!/usr/bin/env python3
"""Benchmark of `ivr dialplan`: render, check and apply with N operators (default 500), and
calls lost while applying under a steady sipp load.

Usage: scripts/bench_dialplan.py [--operators 500] [--runs 3] [--cps 10] [--load-seconds 30] [--json OUT]

Starts its own Asterisk instance "bench-dialplan" (the e2e ports shifted by --port-offset,
default 950; its check instance adds 37 more), a controller and a database
"ivr_bench_dialplan"; stops them at the end. The load: sipp callers to the greeting self-test
number (answer, Russian greeting, digit 1, goodbye) started at --cps calls per second; during
one load run a good apply (an extension added, checked first), during a second one a broken
apply (the public number's context removed, check skipped as with --no-check: the smoke check
fails and it is rolled back). A call is lost when it is
not answered or its journal row does not end with result=digit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ivr.config import PROJECT_ROOT, Settings  # noqa: E402

BASE_PORTS = dict(sip_port=15060, http_port=18088, ami_port=15038, agi_port=14573, health_port=18090,
                  carrier_port=15090, rtp_start=31000, rtp_end=31999)
SHIPPED = PROJECT_ROOT / "dialplans" / "extensions.conf.j2"


def _templates(folder: Path, edit) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "extensions.conf.j2").write_text(edit(SHIPPED.read_text(encoding="utf-8")), encoding="utf-8")
    return folder


def add_extension(n: int):
    return lambda t: t.replace("exten => i,1,Playback(pbx-invalid)",
                               f"exten => 59{n:02d},1,Playback(beep)\nexten => i,1,Playback(pbx-invalid)")


async def load(settings: Settings, workdir: Path, cps: float, seconds: float, during) -> dict:
    from ivr.phones.sipp import SippCaller
    from models.db import run_sql

    async def one(i: int):
        caller = "7916" + str(secrets.randbelow(10**7)).zfill(7)
        phone = SippCaller(settings.bind_host, settings.sip_port, caller_id=caller, workdir=workdir)
        try:
            result = await phone.call("ivr-greeting", dtmf="1", dtmf_delay=1.0, hold_after=4, timeout=10,
                                      raise_on_error=False)
            return caller, result.answered, result.status
        except Exception as exc:  # noqa: BLE001
            return caller, False, repr(exc)

    tasks = []
    started = time.monotonic()
    during_task = None
    i = 0
    while time.monotonic() - started < seconds:
        tasks.append(asyncio.create_task(one(i)))
        i += 1
        if during_task is None and time.monotonic() - started > seconds / 3:
            during_task = asyncio.create_task(asyncio.to_thread(during))
        await asyncio.sleep(max(0.0, started + i / cps - time.monotonic()))
    results = await asyncio.gather(*tasks)
    applies = await during_task if during_task else None
    await asyncio.sleep(3)
    lost = []
    for caller, answered, status in results:
        rows = run_sql(settings.database_url, "SELECT result FROM calls WHERE from_e164 = :p", p="+" + caller)
        if not answered or not rows or rows[0][0] != "digit":
            lost.append((caller, answered, status, rows[0][0] if rows else None))
    return {"calls": len(results), "lost": len(lost), "lost_detail": lost[:10], "applies": applies,
            "seconds": round(time.monotonic() - started, 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--operators", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cps", type=float, default=10.0)
    ap.add_argument("--load-seconds", type=float, default=30.0)
    ap.add_argument("--port-offset", type=int, default=950)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from ivr.dialplan.apply import ApplyRolledBack, apply, expectations, render_live
    from ivr.dialplan.check import check_files
    from ivr.runner import ControllerProcess
    from ivr.stack.asterisk import AsteriskInstance
    from ivr.stack.operators import load_operator_endpoints
    from ivr.stack.postgres import create_database, drop_database, ensure_database
    from models.db import run_sql
    from models.migrate import upgrade

    server = ensure_database(Settings())
    drop_database(server, "ivr_bench_dialplan")
    url = create_database(server, "ivr_bench_dialplan")
    upgrade(url)
    state = Path(tempfile.mkdtemp(prefix="bench-dialplan-"))
    settings = Settings(database_url=url, ari_password=secrets.token_urlsafe(18), ami_secret=secrets.token_urlsafe(18),
                        asterisk_instance="bench-dialplan", state_dir=state, digit_timeout=3.0,
                        **{k: v + args.port_offset for k, v in BASE_PORTS.items()})
    for n in range(args.operators):
        run_sql(url, "INSERT INTO operators (name, extension, sip_contact) VALUES (:n, :e, :c)",
                n=f"Оператор {n}", e=str(10000 + n), c=f"sip:127.0.0.1:{41000 + n}")
    inst = AsteriskInstance(settings)
    inst.ensure_image()
    inst.stop()
    inst.install_config(load_operator_endpoints(url))
    inst.start()
    controller = None
    out: dict = {"operators": args.operators}
    try:
        render_s, check_s, apply_s = [], [], []
        for run in range(args.runs):
            t0 = time.monotonic()
            files, _ops = render_live(settings, url)
            render_s.append(time.monotonic() - t0)
            result = check_files(settings, files, expectations(settings, files))
            assert result.ok, result.problems
            check_s.append(result.seconds)
            res = apply(settings, url, applied_by="bench", template_dirs=[_templates(state / f"t{run}", add_extension(run))])
            assert res.version is not None
            apply_s.append(res.seconds)
        out.update(render_s=[round(x, 2) for x in render_s], check_s=[round(x, 2) for x in check_s],
                   apply_s=[round(x, 2) for x in apply_s], check_median=round(statistics.median(check_s), 2),
                   apply_median=round(statistics.median(apply_s), 2))
        print(json.dumps(out), flush=True)

        controller = ControllerProcess(settings, state / "controller.log").start()
        controller.wait_healthy()

        def good():
            t0 = time.monotonic()
            res = apply(settings, url, applied_by="bench-load",
                        template_dirs=[_templates(state / "load-good", add_extension(99))])
            return {"apply": f"applied version {res.version}", "apply_s": round(time.monotonic() - t0, 2)}

        def broken():
            t0 = time.monotonic()
            bad = _templates(state / "load-bad", lambda t: t.replace("[from-carrier]", "[from-carrier-old]"))
            try:
                apply(settings, url, applied_by="bench-load", template_dirs=[bad], check=False)
                what = "APPLIED (unexpected)"
            except ApplyRolledBack:
                what = "rolled back"
            return {"apply": what, "apply_s": round(time.monotonic() - t0, 2)}

        for name, during in (("good_apply", good), ("broken_apply_no_check", broken)):
            out[name] = asyncio.run(load(settings, state / "sipp", args.cps, args.load_seconds, during))
            out[name]["cps"] = args.cps
            print(name, json.dumps(out[name]), flush=True)
    finally:
        if controller is not None:
            controller.stop()
        inst.stop()
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
