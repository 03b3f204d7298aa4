#!/usr/bin/env python3
"""Benchmark: originate -> StasisStart -> answer -> hangup -> StasisEnd cycles per second.

Two clients drive the same real Asterisk in the same run, alternating, each for --runs rounds:
  ours      the product's ARI layer (AriClient + AriEventStream + CallDispatcher + per-call task)
  baseline  a minimal plain-aiohttp client (REST + websocket, ~40 lines, no supervision)
The figure of merit is ours/baseline of the median cycles/s; the target is >= 0.90.

Usage: scripts/bench_ari.py [--cycles 200] [--concurrency 20] [--runs 3] [--json OUT]
It starts its own Asterisk instance "bench" (ports 2xxxx) from the cached chroot and stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import statistics
import sys
import time
import uuid
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ivr.ari import AriClient, AriEventStream, CallDispatcher  # noqa: E402
from ivr.config import PROJECT_ROOT, Settings  # noqa: E402

# A Local channel whose other half answers and waits: no SIP, no media, pure ARI load.
ENDPOINT = "Local/answer@ivr-selftest"


async def bench_ours(settings: Settings, cycles: int, concurrency: int) -> float:
    app = f"bench-ours-{uuid.uuid4().hex[:6]}"
    ari = AriClient(settings.ari_url, settings.ari_user, settings.ari_password)
    done: dict[str, asyncio.Future] = {}

    async def flow(session, first):
        await ari.answer(session.channel_id)
        await ari.hangup(session.channel_id)
        while (event := await session.next_event(timeout=10)) is not None:
            if event.type == "StasisEnd":
                break
        done[session.channel_id].set_result(None)

    dispatcher = CallDispatcher(app, flow)
    stream = AriEventStream(ari, app, dispatcher)
    reader = asyncio.create_task(stream.run())
    await asyncio.wait_for(stream.connected.wait(), 10)
    semaphore = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()

    async def one() -> None:
        async with semaphore:
            cid = f"b-{uuid.uuid4().hex}"
            done[cid] = loop.create_future()
            await ari.originate(ENDPOINT, app=app, channel_id=cid, timeout=10)
            await asyncio.wait_for(done[cid], 20)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(cycles)))
    elapsed = time.perf_counter() - started
    await stream.stop()
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    await ari.close()
    return cycles / elapsed


async def bench_baseline(settings: Settings, cycles: int, concurrency: int) -> float:
    app = f"bench-base-{uuid.uuid4().hex[:6]}"
    auth = "Basic " + base64.b64encode(f"{settings.ari_user}:{settings.ari_password}".encode()).decode()
    base = settings.ari_url + "/ari"
    loop = asyncio.get_running_loop()
    done: dict[str, asyncio.Future] = {}
    async with aiohttp.ClientSession(headers={"Authorization": auth}) as http:
        ws = await http.ws_connect(settings.ari_ws_url, params={"app": app})

        async def answer_and_hangup(cid: str) -> None:
            async with http.post(f"{base}/channels/{cid}/answer") as r:
                await r.read()
            async with http.delete(f"{base}/channels/{cid}") as r:
                await r.read()

        async def reader() -> None:
            async for msg in ws:
                event = json.loads(msg.data)
                if event["type"] == "StasisStart":
                    asyncio.create_task(answer_and_hangup(event["channel"]["id"]))
                elif event["type"] == "StasisEnd":
                    fut = done.get(event["channel"]["id"])
                    if fut and not fut.done():
                        fut.set_result(None)

        reading = asyncio.create_task(reader())
        semaphore = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with semaphore:
                cid = f"b-{uuid.uuid4().hex}"
                done[cid] = loop.create_future()
                async with http.post(f"{base}/channels", params={"endpoint": ENDPOINT, "app": app,
                                                                  "channelId": cid, "timeout": "10"}) as r:
                    await r.read()
                await asyncio.wait_for(done[cid], 20)

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(cycles)))
        elapsed = time.perf_counter() - started
        await ws.close()
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
    return cycles / elapsed


async def run(settings: Settings, cycles: int, concurrency: int, runs: int) -> dict:
    # Warm-up: connection pools, Asterisk's first Local channels.
    await bench_ours(settings, 20, concurrency)
    await bench_baseline(settings, 20, concurrency)
    ours, base = [], []
    for round_no in range(runs):
        # Alternate the order so neither client always runs on a "warmer" Asterisk.
        pair = [("ours", bench_ours), ("baseline", bench_baseline)]
        if round_no % 2:
            pair.reverse()
        for name, fn in pair:
            rate = await fn(settings, cycles, concurrency)
            (ours if name == "ours" else base).append(rate)
            print(f"round {round_no + 1} {name:<8} {rate:7.1f} cycles/s", flush=True)
    result = {
        "cycles": cycles, "concurrency": concurrency, "runs": runs,
        "ours_cycles_per_s": [round(x, 1) for x in ours],
        "baseline_cycles_per_s": [round(x, 1) for x in base],
        "ours_median": round(statistics.median(ours), 1),
        "baseline_median": round(statistics.median(base), 1),
    }
    result["ratio"] = round(result["ours_median"] / result["baseline_median"], 3)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    args = parser.parse_args()

    from ivr.stack.asterisk import AsteriskInstance

    settings = Settings(
        ari_password=secrets.token_urlsafe(18), ami_secret=secrets.token_urlsafe(18), asterisk_instance="bench",
        sip_port=25160, http_port=28188, ami_port=25138, agi_port=24673, health_port=28190, carrier_port=25190,
        rtp_start=32000, rtp_end=32999, state_dir=PROJECT_ROOT / "var" / "bench",
    )
    instance = AsteriskInstance(settings)
    instance.ensure_image()
    instance.stop()
    instance.install_config()
    instance.start()
    try:
        result = asyncio.run(run(settings, args.cycles, args.concurrency, args.runs))
    finally:
        instance.stop()
    verdict = "PASS" if result["ratio"] >= 0.9 else "BELOW TARGET"
    print(f"\nours {result['ours_median']} cycles/s, baseline {result['baseline_median']} cycles/s, "
          f"ratio {result['ratio']:.3f} (target >= 0.90: {verdict})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
