#!/usr/bin/env python3
"""Benchmark: wallboard update latency, SIP event -> the browser's DOM, with ~200 calls in progress;
page load time of /wallboard and /campaigns (issue 7, "Measure").

Set-up (scripts/bench_inbound.py's ``Bench`` with its own instance, ports and database): Asterisk
instance "bench-wallboard", the real controller, 300 load operators in current_sales on sipp
answerers, and a sipp caller placing ``--rate`` calls/s that each stay ``--hold`` s (rate x hold
calls in progress). The real ``ivr web serve`` (ivr/web/runner.py) runs on the same database; an
admin watches /wallboard (every department, 300+ operator tiles) in headless Debian Chromium
driven by playwright.

Probe: one more operator (extension 7001, department retail) whose phone is a tiny SIP UAS in
this process: it stamps the INVITE's arrival and its own 200 OK (time.time()); a known retail
client calls the public number (SippCaller) so the rules route him to 7001. In the page a
MutationObserver stamps (Date.now(), same host clock) the moment the 7001 tile's data-state
becomes "ringing" and "on_call". Latency = DOM stamp - SIP stamp. Negative "ringing" values
are possible: the controller writes the ring attempt (what the board shows) just before it
originates the operator's leg.

Page load: Navigation Timing (responseEnd, domContentLoadedEventEnd, loadEventEnd from
startTime) of fresh loads, idle (before the load starts) and under load.

Usage: scripts/bench_wallboard.py [--rate 10] [--hold 22] [--probes 20] [--loads 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_inbound as bi  # noqa: E402

from ivr.config import PROJECT_ROOT, Settings  # noqa: E402

INSTANCE = "bench-wallboard"
DB_NAME = "ivr_bench_wallboard"
PROBE_EXT = "7001"
CHROMIUM = os.environ.get("IVR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "bench-" + secrets.token_hex(8)
log = bi.log


def bench_settings(database_url: str | None = None) -> Settings:
    return Settings(
        database_url=database_url, ari_password=secrets.token_urlsafe(18), ami_secret=secrets.token_urlsafe(18),
        asterisk_instance=INSTANCE, sip_port=26060, http_port=29088, ami_port=26038, agi_port=25573,
        health_port=29090, carrier_port=26090, rtp_start=50000, rtp_end=54999,
        state_dir=PROJECT_ROOT / "var" / INSTANCE,
    )


# Own ports for everything bench_inbound would otherwise use.
bi.INSTANCE, bi.DB_NAME = INSTANCE, DB_NAME
bi.UAC_SIP_PORT, bi.UAC_MEDIA_PORT = 46000, 46010
bi.UAS_SIP_BASE, bi.UAS_MEDIA_BASE = 46100, 46200
bi.bench_settings = bench_settings


class ProbePhone(asyncio.DatagramProtocol):
    """A minimal SIP UAS over UDP: 100 + 180 at once, 200 OK (SDP) after ``ring`` s, answers BYE
    and CANCEL. Stamps per Call-ID: INVITE received, 200 OK sent (time.time())."""

    def __init__(self, ring: float = 1.0):
        self.ring = ring
        self.transport = None
        self.port = 0
        self.invite_at: dict[str, float] = {}
        self.ok_at: dict[str, float] = {}
        self.acked: set[str] = set()
        self.order: list[str] = []

    def connection_made(self, transport):
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    @staticmethod
    def _headers(msg: str) -> tuple[str, list[tuple[str, str]]]:
        head = msg.split("\r\n\r\n", 1)[0].split("\r\n")
        out = []
        for line in head[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                out.append((k.strip(), v.strip()))
        return head[0], out

    def _reply(self, addr, hdrs, code: str, *, to_tag: str | None = None, sdp: str = "", cseq: str | None = None):
        lines = [f"SIP/2.0 {code}"]
        for k, v in hdrs:
            kl = k.lower()
            if kl in ("via", "v", "from", "f", "call-id", "i"):
                lines.append(f"{k}: {v}")
            elif kl in ("to", "t"):
                lines.append(f"{k}: {v}" + (f";tag={to_tag}" if to_tag and ";tag=" not in v else ""))
            elif kl == "cseq":
                lines.append(f"CSeq: {cseq or v}")
        lines.append(f"Contact: <sip:probe@127.0.0.1:{self.port}>")
        if sdp:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(sdp.encode())}")
        self.transport.sendto(("\r\n".join(lines) + "\r\n\r\n" + sdp).encode(), addr)

    def datagram_received(self, data, addr):
        now = time.time()
        msg = data.decode("utf-8", "replace")
        start, hdrs = self._headers(msg)
        h = {k.lower(): v for k, v in hdrs}
        call_id = h.get("call-id") or h.get("i") or ""
        method = start.split(" ", 1)[0]
        if method == "INVITE":
            if call_id in self.invite_at:
                return  # a retransmission (our 200 follows)
            self.invite_at[call_id] = now
            self.order.append(call_id)
            tag = secrets.token_hex(4)
            self._reply(addr, hdrs, "100 Trying")
            self._reply(addr, hdrs, "180 Ringing", to_tag=tag)
            sdp = ("v=0\r\no=probe 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                   "m=audio 9 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
                   "a=sendrecv\r\n")
            loop = asyncio.get_running_loop()

            def ok(tries=0):
                if call_id in self.acked or tries > 6 or call_id in getattr(self, "cancelled", set()):
                    return
                if tries == 0:
                    self.ok_at[call_id] = time.time()
                self._reply(addr, hdrs, "200 OK", to_tag=tag, sdp=sdp)
                loop.call_later(0.5 * (2 ** tries), ok, tries + 1)

            loop.call_later(self.ring, ok)
        elif method == "ACK":
            self.acked.add(call_id)
        elif method in ("BYE", "OPTIONS", "INFO", "UPDATE", "NOTIFY"):
            self._reply(addr, hdrs, "200 OK")
        elif method == "CANCEL":
            self.__dict__.setdefault("cancelled", set()).add(call_id)
            self._reply(addr, hdrs, "200 OK")


OBSERVER_JS = """(ext) => {
  window.__probe = [];
  const floor = document.getElementById('wb-floor');
  let last = null;
  const check = () => {
    const box = floor.querySelector('.op[data-ext="' + ext + '"]');
    const state = box ? box.getAttribute('data-state') : null;
    if (state !== last) { window.__probe.push([state, Date.now()]); last = state; }
  };
  new MutationObserver(check).observe(floor, {childList: true, subtree: true, attributes: true});
  check();
}"""

NAV_JS = """() => { const n = performance.getEntriesByType('navigation')[0];
  return {response_end: n.responseEnd, dom_content_loaded: n.domContentLoadedEventEnd, load: n.loadEventEnd,
          transfer_bytes: n.transferSize}; }"""


def pct(values, q):
    return bi._percentile(list(values), q)


async def page_loads(browser, base: str, cookies, path: str, n: int) -> list[dict]:
    out = []
    for _ in range(n):
        ctx = await browser.new_context(viewport={"width": 1920, "height": 1080})
        await ctx.add_cookies(cookies)
        page = await ctx.new_page()
        await page.goto(base + path, wait_until="load")
        assert path in page.url, page.url
        out.append(await page.evaluate(NAV_JS))
        await ctx.close()
    return out


def summarize_loads(rows: list[dict]) -> dict:
    return {k: {"p50": pct([r[k] for r in rows], 0.5), "max": round(max(r[k] for r in rows), 1)}
            for k in ("response_end", "dom_content_loaded", "load")} | {"bytes": rows[-1]["transfer_bytes"]}


async def main_async(args) -> dict:
    from playwright.async_api import async_playwright

    from ivr.phones.sipp import SippCaller
    from ivr.stack.operators import sync_operators
    from ivr.web.runner import WebConsoleProcess, add_user

    results: dict = {"args": vars(args) | {"json": str(args.json) if args.json else None},
                     "loadavg_start": os.getloadavg(), "cores": os.cpu_count(),
                     "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    bench_args = argparse.Namespace(operators=args.operators, uas=args.uas, hold=args.hold, keep_db=args.keep_db)
    bench = bi.Bench(bench_args)
    web = None
    loop = asyncio.get_running_loop()
    transport, phone = await loop.create_datagram_endpoint(lambda: ProbePhone(args.ring), local_addr=("127.0.0.1", 0))
    try:
        await asyncio.to_thread(bench.setup)
        url = bench.db_url
        bi._sql(url, "INSERT INTO operators (name, extension, department_id, sip_contact, status) VALUES "
                     "('Проба Задержки', :e, (SELECT id FROM departments WHERE code = 'retail'), :c, 'available')",
                e=PROBE_EXT, c=f"sip:127.0.0.1:{phone.port}")
        await asyncio.to_thread(sync_operators, bench.settings, url)
        probe_number = f"7916{secrets.randbelow(10**7):07d}"
        [(client_id,)] = bi._sql(url, "INSERT INTO clients (full_name, segment, stage) VALUES "
                                      "('Розница Проба', 'retail', 'potential') RETURNING id")
        bi._sql(url, "INSERT INTO client_phones (client_id, e164) VALUES (:c, :p)", c=client_id, p="+" + probe_number)
        await asyncio.to_thread(add_user, url, "bench", PASSWORD, "admin")
        web = WebConsoleProcess(url, bench.work / "web.log").start()
        await asyncio.to_thread(web.wait_healthy, 30)
        log(f"web console at {web.url}; probe phone on udp {phone.port}")

        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            ctx = await browser.new_context(viewport={"width": 1920, "height": 1080})
            page = await ctx.new_page()
            await page.goto(web.url + "/login")
            await page.fill("input[name=login]", "bench")
            await page.fill("input[name=password]", PASSWORD)
            async with page.expect_navigation():
                await page.click("form.login button[type=submit]")
            cookies = await ctx.cookies()
            results["page_load_idle"] = {
                path: summarize_loads(await page_loads(browser, web.url, cookies, path, args.loads))
                for path in ("/wallboard", "/campaigns")}
            log(f"page load idle: {results['page_load_idle']}")

            await page.goto(web.url + "/wallboard")
            await page.wait_for_selector("#wb-conn.live", timeout=20_000)
            await page.evaluate(OBSERVER_JS, PROBE_EXT)

            # The load: rate x hold calls in progress once ramped up.
            load_seconds = args.ramp + args.probes * (args.probe_hold + args.ring + 3) + 10
            load = asyncio.create_task(asyncio.to_thread(bench.run_step, args.rate, load_seconds, "load"))
            log(f"load: {args.rate} calls/s x {load_seconds:.0f}s, hold {args.hold}s "
                f"(~{args.rate * args.hold:.0f} in progress)")
            in_progress: list[int] = []
            stop = threading.Event()

            def sample():
                while not stop.wait(2.0):
                    try:
                        out = bench.instance.cli("core show channels count", timeout=5)
                    except Exception:
                        continue
                    m = re.search(r"(\d+) active calls?", out)
                    if m:
                        in_progress.append(int(m.group(1)))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            await asyncio.sleep(args.ramp)
            results["page_load_under_load"] = {
                path: summarize_loads(await page_loads(browser, web.url, cookies, path, args.loads))
                for path in ("/wallboard", "/campaigns")}
            log(f"page load under load: {results['page_load_under_load']}")

            caller = SippCaller(bench.settings.bind_host, bench.settings.sip_port, caller_id=probe_number,
                                workdir=bench.work / "probe")
            (bench.work / "probe").mkdir(exist_ok=True)
            samples = []
            for i in range(args.probes):
                if load.done():
                    log("the load ended early")
                    break
                calls_now = in_progress[-1] if in_progress else None
                before = len(phone.order)
                t_start = time.time()
                res = await caller.call(bench.settings.public_number.lstrip("+"), hold_after=args.probe_hold,
                                        timeout=15, raise_on_error=False)
                await asyncio.sleep(1.5)   # the board shows the end too
                if len(phone.order) == before:
                    log(f"probe {i}: the probe phone got no INVITE (answered={res.answered})")
                    continue
                # The first INVITE of this call: under load a late answer can make the controller
                # ring again (ring_timeout), and the board's "on a call" belongs to the first leg.
                cids = phone.order[before:]
                cid = cids[0]
                t_inv, t_ok = phone.invite_at[cid], phone.ok_at.get(cid)
                seen = [(s, t / 1000.0) for s, t in await page.evaluate("window.__probe") if t / 1000.0 >= t_start]
                ring = next((t for s, t in seen if s == "ringing"), None)
                talk = next((t for s, t in seen if s == "on_call" and ring is not None and t >= ring), None)
                # The controller's own stamps of the same moments (call_attempts, written when it
                # rings the leg / sees the answer): the board's share of the latency, DB -> DOM.
                att = bi._sql(url, "SELECT extract(epoch FROM a.started_at) AS s, extract(epoch FROM a.answered_at) AS a "
                                   "FROM call_attempts a JOIN operators o ON o.id = a.operator_id "
                                   "WHERE o.extension = :e AND a.started_at >= to_timestamp(:t) ORDER BY a.id LIMIT 1",
                              e=PROBE_EXT, t=t_start)
                db_ring = float(att[0].s) if att else None
                db_ans = float(att[0].a) if att and att[0].a is not None else None
                row = {"calls_in_progress": calls_now, "answered": res.answered, "invites": len(cids),
                       "sip": [round(t_inv, 3), round(t_ok, 3) if t_ok else None],
                       "dom": [[s, round(t, 3)] for s, t in seen],
                       "ringing_ms": round((ring - t_inv) * 1000, 1) if ring else None,
                       "on_call_ms": round((talk - t_ok) * 1000, 1) if talk and t_ok else None,
                       "db_ringing_ms": round((ring - db_ring) * 1000, 1) if ring and db_ring else None,
                       "db_on_call_ms": round((talk - db_ans) * 1000, 1) if talk and db_ans else None}
                samples.append(row)
                log(f"probe {i}: " + str({k: v for k, v in row.items() if k not in ("sip", "dom")}))
            stop.set()
            results["probes"] = samples
            results["calls_in_progress"] = {"min": min(in_progress[len(in_progress) // 4:], default=None),
                                            "max": max(in_progress, default=None),
                                            "samples": in_progress}
            step = await load
            results["load"] = {k: getattr(step, k) for k in (
                "rate", "duration", "calls", "sipp_success", "sipp_failed", "db_answered", "db_other", "failed",
                "max_concurrent_sipp", "max_calls_asterisk", "controller_cpu_pct", "asterisk_cpu_pct",
                "machine_cpu_pct", "wait_p50", "wait_p95")}
            await browser.close()
    finally:
        transport.close()
        if web is not None:
            await asyncio.to_thread(web.stop)
        await asyncio.to_thread(bench.teardown)
    ring = [s["ringing_ms"] for s in results.get("probes", []) if s["ringing_ms"] is not None]
    talk = [s["on_call_ms"] for s in results.get("probes", []) if s["on_call_ms"] is not None]
    results["latency_ms"] = {
        "ringing": {"n": len(ring), "p50": pct(ring, 0.5), "p95": pct(ring, 0.95), "max": max(ring, default=None)},
        "on_call": {"n": len(talk), "p50": pct(talk, 0.5), "p95": pct(talk, 0.95), "max": max(talk, default=None)},
        **{k: {"n": len(v), "p50": pct(v, 0.5), "p95": pct(v, 0.95), "max": max(v, default=None)}
           for k, v in (("db_ringing", [s["db_ringing_ms"] for s in results.get("probes", [])
                                        if s.get("db_ringing_ms") is not None]),
                        ("db_on_call", [s["db_on_call_ms"] for s in results.get("probes", [])
                                        if s.get("db_on_call_ms") is not None]))},
        "missed": sum(1 for s in results.get("probes", []) if s["ringing_ms"] is None or s["on_call_ms"] is None)}
    results["loadavg_end"] = os.getloadavg()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=10, help="load calls/s")
    parser.add_argument("--hold", type=float, default=22, help="seconds each load call stays after the answer")
    parser.add_argument("--ramp", type=float, default=30, help="seconds of load before measuring")
    parser.add_argument("--operators", type=int, default=300)
    parser.add_argument("--uas", type=int, default=4)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--probe-hold", type=float, default=8.0,
                        help="seconds the probe caller stays after the IVR answered (routing happens then)")
    parser.add_argument("--ring", type=float, default=1.0, help="seconds the probe phone rings before answering")
    parser.add_argument("--loads", type=int, default=5, help="page loads per page and phase")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()
    log(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    results = asyncio.run(main_async(args))
    lat = results["latency_ms"]
    print(json.dumps({k: results.get(k) for k in ("date", "page_load_idle", "page_load_under_load", "latency_ms",
                                                  "load")}, indent=1, default=str))
    cip = results.get("calls_in_progress", {})
    print(f"calls in progress during the probes: {cip.get('min')}..{cip.get('max')} (target 200)")
    p95 = max(v for v in (lat["ringing"]["p95"], lat["on_call"]["p95"]) if v is not None) if (
        lat["ringing"]["p95"] is not None or lat["on_call"]["p95"] is not None) else None
    print(f"wallboard latency p95 (worse of ringing / on a call): {p95} ms "
          f"(target <= 500: {'PASS' if p95 is not None and p95 <= 500 else 'NOT MET'})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
