#!/usr/bin/env python3
"""Benchmark: dialers claiming due notification jobs (ivr.notify.claim.claim_due_jobs).
Target: >= 5,000 claims/s with two dialer processes claiming at once, and 0 double claims.

Data (database ``ivr_bench_claim`` on the local Postgres, never the product's database): one
client, --jobs due pending jobs (INSERT ... SELECT generate_series, then VACUUM ANALYZE),
recreated before every run.

Each run starts --processes separate OS processes (multiprocessing, spawn) together; each has its
own engine (models.db.make_async_engine, the product's settings: synchronous commits) and loops
``async with engine.begin(): claim_due_jobs(limit=--batch)`` - one statement and one commit per
batch, the attempt rows included - until a claim returns nothing. Timed from the common start to
the last process finishing. Checked afterwards: the job ids the processes got (no id twice, all
--jobs ids), and in the database one attempt per job (attempt_no 1) and every job ``dialing``.

Usage: scripts/bench_claim.py [--jobs 100000] [--batch 200] [--processes 2] [--runs 3]
                              [--database-url URL] [--keep]
Without --keep the database is dropped at the end. Nothing is written into the repository.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import platform
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text  # noqa: E402

from ivr.config import Settings  # noqa: E402
from ivr.stack.postgres import create_database, drop_database, ensure_database  # noqa: E402
from models.db import make_async_engine, make_engine, mask_url  # noqa: E402
from models.migrate import upgrade  # noqa: E402

DB_NAME = "ivr_bench_claim"
DUE_AT = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)
NOW = DUE_AT + timedelta(hours=1)


def load_jobs(url: str, n: int) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE notification_jobs, clients RESTART IDENTITY CASCADE"))
            client = conn.execute(text("INSERT INTO clients (full_name, notify_channel) "
                                       "VALUES ('Bench Client', 'call') RETURNING id")).scalar()
            conn.execute(text(
                "INSERT INTO notification_jobs (client_id, e164, template, channel, status, earliest_at, "
                "next_attempt_at, prompt_text) "
                "SELECT :client, '+7916' || lpad(g::text, 7, '0'), 'docs_sent', 'preference', 'pending', "
                ":at - (g || ' ms')::interval, :at - (g || ' ms')::interval, 'Здравствуйте' "
                "FROM generate_series(1, :n) g"), {"client": client, "at": DUE_AT, "n": n})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE notification_jobs"))
            conn.execute(text("VACUUM ANALYZE notification_attempts"))
            conn.execute(text("VACUUM ANALYZE clients"))
    finally:
        engine.dispose()


def dialer(url: str, name: str, batch: int, start, results) -> None:
    """One dialer process: claim batches until none are left; report (name, ids, batches, seconds)."""
    from ivr.notify.claim import claim_due_jobs

    async def run():
        engine = make_async_engine(url, pool_size=1)
        ids: list[int] = []
        batches = 0
        async with engine.connect() as conn:  # warm the connection before the start signal
            await conn.execute(text("SELECT 1"))
        start.wait()
        t0 = time.perf_counter()
        while True:
            async with engine.begin() as conn:
                jobs = await claim_due_jobs(conn, worker=name, now=NOW, limit=batch)
            batches += 1
            if not jobs:
                break
            ids.extend(j.job_id for j in jobs)
        elapsed = time.perf_counter() - t0
        await engine.dispose()
        return ids, batches, elapsed

    ids, batches, elapsed = asyncio.run(run())
    results.put((name, ids, batches, elapsed))


def one_run(url: str, jobs: int, batch: int, processes: int) -> dict:
    load_jobs(url, jobs)
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    results = ctx.Queue()
    procs = [ctx.Process(target=dialer, args=(url, f"dialer-{i + 1}", batch, start, results))
             for i in range(processes)]
    for p in procs:
        p.start()
    time.sleep(2.0)  # let every process import and connect
    t0 = time.perf_counter()
    start.set()
    got = [results.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    all_ids = [i for _, ids, _, _ in got for i in ids]
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            db = conn.execute(text(
                "SELECT (SELECT count(*) FROM notification_attempts) AS attempts, "
                "(SELECT count(DISTINCT job_id) FROM notification_attempts) AS attempted_jobs, "
                "(SELECT count(*) FROM notification_attempts WHERE attempt_no <> 1) AS repeated, "
                "(SELECT count(*) FROM notification_jobs WHERE status = 'dialing' AND attempts_made = 1) AS dialing, "
                "(SELECT count(*) FROM (SELECT job_id FROM notification_attempts GROUP BY job_id "
                "HAVING count(*) > 1) x) AS double_attempts")).mappings().one()
    finally:
        engine.dispose()
    double = (len(all_ids) - len(set(all_ids))) + db["double_attempts"] + db["repeated"]
    complete = (len(set(all_ids)) == jobs and db["attempts"] == jobs and db["attempted_jobs"] == jobs
                and db["dialing"] == jobs)
    return {
        "claimed": len(all_ids), "wall": wall, "rate": len(all_ids) / wall, "double": double, "complete": complete,
        "per_process": {name: (len(ids), batches, elapsed) for name, ids, batches, elapsed in sorted(got)},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--keep", action="store_true", help="keep the database ivr_bench_claim")
    args = parser.parse_args()

    server = ensure_database(Settings(database_url=args.database_url or None))
    drop_database(server, DB_NAME)
    url = create_database(server, DB_NAME)
    upgrade(url)
    print(f"database {mask_url(url)}; {args.jobs} due jobs, {args.processes} dialer processes, "
          f"batch {args.batch}; {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
          flush=True)
    rows = []
    try:
        for run in range(1, args.runs + 1):
            r = one_run(url, args.jobs, args.batch, args.processes)
            rows.append(r)
            per = ", ".join(f"{name} {n} in {b} batches" for name, (n, b, _) in r["per_process"].items())
            print(f"run {run}: {r['claimed']} claims in {r['wall']:.2f} s = {r['rate']:,.0f}/s; "
                  f"double claims {r['double']}; all jobs claimed once: {r['complete']} ({per})", flush=True)
    finally:
        if not args.keep:
            drop_database(server, DB_NAME)

    print()
    print("| run | jobs | processes | batch | wall s | claims/s | per process | double claims | all claimed once |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows, 1):
        per = " / ".join(str(n) for n, _, _ in r["per_process"].values())
        print(f"| {i} | {r['claimed']:,} | {args.processes} | {args.batch} | {r['wall']:.2f} | {r['rate']:,.0f} | "
              f"{per} | {r['double']} | {'yes' if r['complete'] else 'NO'} |")
    worst = min(r["rate"] for r in rows)
    ok = worst >= 5000 and all(r["double"] == 0 and r["complete"] for r in rows)
    print(f"\nworst run {worst:,.0f} claims/s (target >= 5,000/s), double claims "
          f"{sum(r['double'] for r in rows)} (must be 0): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
