#!/usr/bin/env python3
"""Benchmark: the routing decision of one inbound call (caller ID -> chosen operator) against a
client store of production size. Target: p99 <= 5 ms.

One decision is what the controller does before the first ring, through the same code:
  InboundStore.caller_facts(e164)       models.clients.caller_facts (one SQL round trip)
  Ruleset.decide(facts, now)            routing/rules.yaml (pure); a topic menu is answered with
                                        its default topic and decided again, as the controller does
  InboundStore.department_views(dept)   models.operators.department_views (one SQL round trip)
  choose_operator(views, strategy, now) routing.distribution (pure)
over the controller's routing engine (models.db.make_async_engine(pre_ping=False): SQLAlchemy + psycopg, pooled,
no per-checkout ping, reads in autocommit), one call at a time, so one pooled connection serves every lookup.

Mix of callers: 70% known numbers (random), 20% unknown numbers, 10% clients without deals whom
an active-sales manager called within 90 days. Warm-up --warmup lookups, then --lookups timed,
--runs times. Reported: p50/p90/p99/max of the whole decision and of the caller_facts part.

Data (database ``ivr_bench_routing`` on the local Postgres, never the product's database):
--clients clients, --phones E.164 Russian mobiles (+79XXXXXXXXX, unique), 60 operators in the
seven departments of routing/rules.yaml, deals, --contacts contact history (+ ~5% of clients
called by active sales), --attempts call_attempts over the past year (+ today's). Generated
server-side with INSERT ... SELECT generate_series, then VACUUM ANALYZE.

Usage: scripts/bench_routing.py [--clients 1000000] [--phones 1500000] [--lookups 20000]
                                [--database-url URL] [--keep] [--extra-index]
Without --keep the database is dropped at the end; with --keep it is kept and reused next time
when it holds the same sizes. Nothing is written into the repository.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import time
from datetime import datetime, time as dtime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from ivr.config import Settings  # noqa: E402
from ivr.inbound.board import OperatorBoard  # noqa: E402
from ivr.inbound.store import InboundStore, day_start  # noqa: E402
from ivr.stack.postgres import _conninfo, create_database, drop_database, ensure_database  # noqa: E402
from models.clients import caller_facts, caller_facts_query  # noqa: E402
from models.db import make_async_engine, mask_url  # noqa: E402
from models.migrate import upgrade  # noqa: E402
from routing.distribution import choose_operator  # noqa: E402
from routing.loader import DEFAULT_FILE, load  # noqa: E402
from routing.store import apply_ruleset  # noqa: E402

DB_NAME = "ivr_bench_routing"
MSK = ZoneInfo("Europe/Moscow")
# E.164 numbers: +79 followed by (n * MULT) mod 10^9, nine digits. MULT is a unit mod 10^9
# (3^18, coprime to 2 and 5), so n -> number is a bijection: numbers 1..phones are in the
# table, numbers above it are guaranteed unknown.
MULT = 387420489
OPERATORS = {"current_sales": 15, "active_sales": 12, "current_service": 12, "retail": 8, "documents": 3,
             "supply": 5, "warehouse": 5}
# Not in the migrations: the index department_views needs for "today's" statistics (without it
# the stats subquery reads all of call_attempts). Created only in the bench database.
EXTRA_INDEX = "CREATE INDEX ix_call_attempts_started_at ON call_attempts (started_at)"
MIX = (("known", 0.70), ("unknown", 0.20), ("active_sales", 0.10))


def e164_of(n: int) -> str:
    return "+79" + f"{(n * MULT) % 1_000_000_000:09d}"


# --- data ---------------------------------------------------------------------------------------
def bench_now(ruleset) -> datetime:
    """A working moment (11:00 Moscow) at which every routed department is open: today if it is
    a working day, else the latest one before. Workload statistics ("today") are generated
    relative to it, so the department step always has operators with a day's history."""
    routed = ("current_sales", "active_sales", "current_service", "retail", "documents")
    day = datetime.now(MSK).date()
    for _ in range(30):
        moment = datetime.combine(day, dtime(11, 0), MSK)
        if all(ruleset.departments[c].is_open(moment) for c in routed):
            return moment.astimezone(timezone.utc)
        day -= timedelta(days=1)
    raise SystemExit("no working day within 30 days in routing/rules.yaml")


def sizes_key(args) -> dict[str, str]:
    return {"clients": str(args.clients), "phones": str(args.phones), "contacts": str(args.contacts),
            "attempts": str(args.attempts)}


def populated(conninfo: str, args) -> dict[str, str] | None:
    """The bench_meta rows when the database was fully populated with the same sizes, else None."""
    try:
        with psycopg.connect(conninfo) as conn:
            if conn.execute("SELECT to_regclass('bench_meta')").fetchone()[0] is None:
                return None
            meta = dict(conn.execute("SELECT key, value FROM bench_meta").fetchall())
    except psycopg.Error:
        return None
    if meta.get("complete") != "yes" or any(meta.get(k) != v for k, v in sizes_key(args).items()):
        return None
    return meta


def step(conn: psycopg.Connection, what: str, sql: str, params: dict | None = None) -> None:
    started = time.perf_counter()
    cur = conn.execute(sql, params or {})
    conn.commit()
    rows = f"{cur.rowcount:>9,} rows" if cur.rowcount and cur.rowcount > 0 else " " * 14
    print(f"  {what:<44} {rows}  {time.perf_counter() - started:6.1f} s", flush=True)


def generate(url: str, conninfo: str, args, ruleset, source: str, now: datetime) -> None:
    started = time.perf_counter()
    upgrade(url)
    apply_ruleset(url, ruleset, source, "bench_routing")
    with psycopg.connect(conninfo) as conn:
        # Bulk load: the data is consistent by construction, so foreign-key triggers are skipped
        # (session_replication_role) and commits need not wait for the WAL flush.
        conn.execute("SET session_replication_role = replica")
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute("SELECT setseed(0.42)")
        conn.commit()
        depts = dict(conn.execute("SELECT code, id FROM departments").fetchall())
        ops: dict[str, list[int]] = {}
        ext = 100
        for code, count in OPERATORS.items():
            for i in range(count):
                ext += 1
                status = "paused" if ext % 11 == 0 else "logged_out" if ext % 17 == 0 else "available"
                op_id = conn.execute(
                    "INSERT INTO operators (name, extension, department_id, sip_secret, status, status_since) "
                    "VALUES (%s, %s, %s, md5(random()::text), %s, %s - interval '2 hours') RETURNING id",
                    (f"Оператор {ext}", str(ext), depts[code], status, now)).fetchone()[0]
                ops.setdefault(code, []).append(op_id)
        conn.commit()
        print(f"  {'operators':<44} {sum(OPERATORS.values()):>9,} rows", flush=True)
        all_ops = [i for v in ops.values() for i in v]
        personal = ops["current_sales"] + ops["current_service"]
        p = {"n": args.clients, "phones": args.phones, "mult": MULT, "personal": personal, "all": all_ops,
             "active": ops["active_sales"], "service": depts["current_service"], "sales": depts["current_sales"],
             "retail": depts["retail"], "contacts": args.contacts, "attempts": args.attempts, "now": now,
             "day_start": day_start(now)}
        step(conn, "clients", """
            INSERT INTO clients (id, external_id, full_name, address_name, company, segment, stage, deals_count,
                                 assigned_operator_id, department_id, notify_channel, created_at, updated_at)
            SELECT g, 'EXT-' || g, 'Клиент ' || g,
                   CASE WHEN r_addr < 0.6 THEN 'Пётр Николаевич' END,
                   CASE WHEN seg IS DISTINCT FROM 'retail' THEN 'ООО «Компания ' || g || '»' END,
                   seg, CASE WHEN deals > 0 THEN 'client' ELSE 'potential' END, deals,
                   CASE WHEN (deals > 0 AND r_op < 0.6) OR r_op < 0.05
                        THEN (%(personal)s::int[])[1 + floor(r_pick * cardinality(%(personal)s::int[]))::int] END,
                   CASE WHEN deals > 0 THEN %(service)s WHEN seg = 'retail' THEN %(retail)s
                        WHEN seg IS NOT NULL THEN %(sales)s END,
                   CASE WHEN r_addr < 0.1 THEN 'sms' ELSE 'call' END, now() - interval '1 year', now()
            FROM (SELECT g, random() AS r_addr, random() AS r_op, random() AS r_pick,
                         CASE WHEN r_seg < 0.40 THEN 'retail' WHEN r_seg < 0.65 THEN 'small_wholesale'
                              WHEN r_seg < 0.80 THEN 'wholesale' WHEN r_seg < 0.85 THEN 'large_wholesale' END AS seg,
                         CASE WHEN r_deal < 0.30 THEN 1 + floor(power(random(), 3) * 40)::int ELSE 0 END AS deals
                  FROM (SELECT g, random() AS r_seg, random() AS r_deal
                        FROM generate_series(1, %(n)s) g) s0) s
        """, p)
        step(conn, "client_phones (+79XXXXXXXXX, unique)", """
            INSERT INTO client_phones (id, client_id, e164, label)
            SELECT g, CASE WHEN g <= %(n)s THEN g ELSE 1 + ((g::bigint * 7919) %% %(n)s)::int END,
                   '+79' || lpad(((g::bigint * %(mult)s) %% 1000000000)::text, 9, '0'),
                   CASE WHEN g <= %(n)s THEN 'мобильный' ELSE 'второй' END
            FROM generate_series(1, %(phones)s) g
        """, p)
        step(conn, "deals (up to 3 rows per client with deals)", """
            INSERT INTO deals (client_id, external_id, closed_at, amount, operator_id)
            SELECT c.id, 'D-' || c.id || '-' || k, now() - random() * interval '900 days',
                   round((1000 + random() * 500000)::numeric, 2), c.assigned_operator_id
            FROM clients c CROSS JOIN LATERAL generate_series(1, least(c.deals_count, 3)) k
            WHERE c.deals_count > 0
        """, p)
        step(conn, "contacts: history (2 years, any operator)", """
            INSERT INTO contacts (client_id, operator_id, direction, at, call_uid, result)
            SELECT 1 + floor(random() * %(n)s)::int,
                   (%(all)s::int[])[1 + floor(random() * cardinality(%(all)s::int[]))::int],
                   (CASE WHEN random() < 0.6 THEN 'inbound' ELSE 'outbound' END)::call_direction,
                   now() - random() * interval '730 days', 'h-' || g,
                   CASE WHEN random() < 0.8 THEN 'answered' ELSE 'no_answer' END
            FROM generate_series(1, %(contacts)s) g
        """, p)
        step(conn, "contacts: active sales called ~5% (no deals)", """
            INSERT INTO contacts (client_id, operator_id, direction, at, call_uid, result)
            SELECT c.id, (%(active)s::int[])[1 + floor(random() * cardinality(%(active)s::int[]))::int],
                   'outbound', now() - random() * interval '80 days', 'as-' || c.id || '-' || k, 'answered'
            FROM (SELECT id FROM clients WHERE deals_count = 0 AND random() < 0.0715) c
            CROSS JOIN LATERAL generate_series(1, 1 + floor(random() * 3)::int) k
        """, p)
        step(conn, "call_attempts: past year", """
            INSERT INTO call_attempts (call_uid, operator_id, extension, step, department_code, started_at,
                                       answered_at, ended_at, outcome, talk_seconds)
            SELECT 'a-' || s.g, o.id, o.extension, 'department', o.code, s.t,
                   CASE WHEN s.ans THEN s.t + interval '6 seconds' END,
                   s.t + CASE WHEN s.ans THEN make_interval(secs => 6 + s.talk) ELSE interval '15 seconds' END,
                   CASE WHEN s.ans THEN 'answered' ELSE 'no_answer' END, CASE WHEN s.ans THEN s.talk END
            FROM (SELECT g, 1 + floor(random() * cardinality(%(all)s::int[]))::int AS k,
                         %(now)s - random() * interval '365 days' - interval '1 day' AS t,
                         random() < 0.8 AS ans, 20 + random() * 300 AS talk
                  FROM generate_series(1, %(attempts)s) g) s
            JOIN (SELECT x.k, op.id, op.extension, d.code
                  FROM unnest(%(all)s::int[]) WITH ORDINALITY AS x(id, k)
                  JOIN operators op ON op.id = x.id JOIN departments d ON d.id = op.department_id) o ON o.k = s.k
        """, p)
        step(conn, "call_attempts: today (before the bench moment)", """
            INSERT INTO call_attempts (call_uid, operator_id, extension, step, department_code, started_at,
                                       answered_at, ended_at, outcome, talk_seconds)
            SELECT 't-' || s.g, o.id, o.extension, 'department', o.code, s.t,
                   CASE WHEN s.ans THEN s.t + interval '6 seconds' END,
                   s.t + CASE WHEN s.ans THEN make_interval(secs => 6 + s.talk) ELSE interval '15 seconds' END,
                   CASE WHEN s.ans THEN 'answered' ELSE 'no_answer' END, CASE WHEN s.ans THEN s.talk END
            FROM (SELECT g, 1 + floor(random() * cardinality(%(all)s::int[]))::int AS k,
                         %(day_start)s + random() * (%(now)s - interval '10 minutes' - %(day_start)s) AS t,
                         random() < 0.8 AS ans, 20 + random() * 300 AS talk
                  FROM generate_series(1, greatest(%(attempts)s / 365, 100)) g) s
            JOIN (SELECT x.k, op.id, op.extension, d.code
                  FROM unnest(%(all)s::int[]) WITH ORDINALITY AS x(id, k)
                  JOIN operators op ON op.id = x.id JOIN departments d ON d.id = op.department_id) o ON o.k = s.k
        """, p)
        for table in ("clients", "client_phones", "deals", "contacts", "operators", "call_attempts"):
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                         f"(SELECT coalesce(max(id), 1) FROM {table}))")
        conn.commit()
        conn.autocommit = True
        t0 = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        print(f"  {'VACUUM ANALYZE':<44} {'':14}  {time.perf_counter() - t0:6.1f} s", flush=True)
        conn.autocommit = False
        conn.execute("CREATE TABLE bench_meta (key text PRIMARY KEY, value text)")
        meta = {**sizes_key(args), "bench_now": now.isoformat(), "complete": "yes",
                "generated_at": datetime.now(timezone.utc).isoformat()}
        conn.cursor().executemany("INSERT INTO bench_meta VALUES (%s, %s)", list(meta.items()))
        conn.commit()
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
    print(f"  generated in {time.perf_counter() - started:.0f} s; database size {size}", flush=True)


# --- measurement -----------------------------------------------------------------------------------
def pick_numbers(conninfo: str, args, count: int, rng: random.Random) -> list[tuple[str, str]]:
    with psycopg.connect(conninfo) as conn:
        called = [r[0] for r in conn.execute("""
            SELECT DISTINCT ON (p.client_id) p.e164
            FROM contacts ct
            JOIN operators o ON o.id = ct.operator_id
            JOIN departments d ON d.id = o.department_id AND d.code = 'active_sales'
            JOIN clients c ON c.id = ct.client_id AND c.deals_count < 1
            JOIN client_phones p ON p.client_id = c.id
            WHERE ct.direction = 'outbound' AND ct.at >= now() - interval '89 days'
            ORDER BY p.client_id, p.id""")]
        clients = conn.execute("SELECT count(*) FROM clients").fetchone()[0]
    print(f"active-sales-called clients (no deals, outbound within 90 days): {len(called):,} "
          f"({100 * len(called) / clients:.1f}% of {clients:,})")
    out = []
    for _ in range(count):
        x = rng.random()
        if x < MIX[0][1]:
            out.append(("known", e164_of(rng.randint(1, args.phones))))
        elif x < MIX[0][1] + MIX[1][1]:
            out.append(("unknown", e164_of(rng.randint(args.phones + 1, args.phones + 50_000_000))))
        else:
            out.append(("active_sales", rng.choice(called)))
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s))) - 1))]


def summary(values_ns: list[int]) -> dict[str, float]:
    ms = [v / 1e6 for v in values_ns]
    return {"p50": statistics.median(ms), "p90": pct(ms, 90), "p99": pct(ms, 99), "max": max(ms)}


async def decide_one(store: InboundStore, board: OperatorBoard, ruleset, e164: str, now: datetime,
                     check: dict) -> tuple[int, int]:
    s = ruleset.settings
    t0 = time.perf_counter_ns()
    facts = await store.caller_facts(e164, active_sales_department=s.active_sales_department,
                                     first_deal_threshold=s.first_deal_threshold)
    t1 = time.perf_counter_ns()
    decision = ruleset.decide(facts, now)
    if decision.menu is not None:
        # The caller presses nothing: the menu's default topic, decided again (as the controller).
        decision = ruleset.decide(facts.with_topic(decision.menu.topic_for(None)), now)
    dept_step = next((st for st in decision.steps if st.kind in ("department", "fallback")), None)
    chosen = None
    if dept_step is not None:
        spec = ruleset.departments[dept_step.department]
        # Through the controller's OperatorBoard: with --views-cache 0 every decision reads the
        # list (first call after idle); with 0.5 (the board's default) as under steady traffic.
        views = board.live_views(spec.code, await board.views(spec.code))
        chosen = choose_operator(views, spec.strategy, now)
    t2 = time.perf_counter_ns()
    check["rules"][decision.rule] = check["rules"].get(decision.rule, 0) + 1
    check["chosen"] += chosen is not None
    check["personal"] += bool(decision.steps and decision.steps[0].operator)
    return t2 - t0, t1 - t0


async def measure(url: str, ruleset, numbers: list[tuple[str, str]], warmup: int, now: datetime,
                  views_cache: float = 0.0) -> dict:
    engine = make_async_engine(url, pre_ping=False)  # as the controller's routing pool
    store = InboundStore(engine)
    board = OperatorBoard(lambda code: store.department_views(code, day_start(now, ruleset.departments[code].timezone)))
    board.VIEWS_TTL = views_cache
    check = {"rules": {}, "chosen": 0, "personal": 0}
    try:
        for _, e164 in numbers[:warmup]:
            await decide_one(store, board, ruleset, e164, now, {"rules": {}, "chosen": 0, "personal": 0})
        total, facts, by_kind = [], [], {}
        for kind, e164 in numbers[warmup:]:
            t, f = await decide_one(store, board, ruleset, e164, now, check)
            total.append(t)
            facts.append(f)
            by_kind.setdefault(kind, []).append(t)
        # The caller_facts SQL alone on one held connection (no checkout, no pre-ping): what
        # the query itself costs, for the breakdown.
        s = ruleset.settings
        sql_only = []
        async with engine.connect() as conn:
            for _, e164 in numbers[warmup:]:
                t0 = time.perf_counter_ns()
                await caller_facts(conn, e164, active_sales_department=s.active_sales_department,
                                   first_deal_threshold=s.first_deal_threshold)
                sql_only.append(time.perf_counter_ns() - t0)
    finally:
        await engine.dispose()
    return {"total": summary(total), "facts": summary(facts), "facts_sql": summary(sql_only),
            "by_kind": {k: summary(v) for k, v in by_kind.items()}, "check": check}


async def explain_views(url: str, department: str, now: datetime) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of models.operators.department_views' query (captured, not copied)."""
    import models.operators as operators

    captured = {}

    class Capture:
        async def execute(self, stmt, params=None):
            captured["stmt"] = stmt.bindparams(**params) if params else stmt
            return []

    await operators.department_views(Capture(), department, day_start=day_start(now))
    engine = make_async_engine(url)
    try:
        async with engine.connect() as conn:
            compiled = captured["stmt"].compile(dialect=engine.dialect)
            rows = (await conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + str(compiled),
                                               compiled.params)).all()
    finally:
        await engine.dispose()
    print(f"\nEXPLAIN (ANALYZE, BUFFERS) department_views({department!r}):")
    for (line,) in rows:
        print("    " + line)


async def explain(url: str, e164: str, label: str, ruleset) -> None:
    engine = make_async_engine(url)
    try:
        async with engine.connect() as conn:
            since = datetime.now(timezone.utc) - timedelta(days=90)
            stmt = caller_facts_query(e164, active_sales_department=ruleset.settings.active_sales_department,
                                      first_deal_threshold=ruleset.settings.first_deal_threshold, since=since)
            compiled = stmt.compile(dialect=engine.dialect)
            rows = (await conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + str(compiled),
                                               compiled.params)).all()
    finally:
        await engine.dispose()
    print(f"\nEXPLAIN (ANALYZE, BUFFERS) caller_facts, {label} {e164}:")
    for (line,) in rows:
        print("    " + line)


# --- report ------------------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    mem_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return {"nproc": str(os.cpu_count()), "ram": f"{mem_kb / 1024 / 1024:.0f} GiB",
            "python": platform.python_version()}


def fmt(d: dict[str, float]) -> str:
    return f"{d['p50']:.2f} | {d['p90']:.2f} | {d['p99']:.2f} | {d['max']:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--phones", type=int, default=1_500_000)
    parser.add_argument("--contacts", type=int, default=2_000_000, help="contact history rows (besides active sales)")
    parser.add_argument("--attempts", type=int, default=1_000_000, help="call_attempts rows over the past year")
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--views-cache", type=float, default=0.0,
                        help="seconds the operator list is reused (0: read per decision, the cold case; "
                             "0.5: the controller's OperatorBoard default under traffic)")
    parser.add_argument("--database-url", help="the Postgres server (default: as tests do, DATABASE_URL or "
                                               "127.0.0.1:5432); the database used is always " + DB_NAME)
    parser.add_argument("--keep", action="store_true", help="keep the database (and reuse it when populated)")
    parser.add_argument("--extra-index", action="store_true",
                        help=f"measure with the suggested index ({EXTRA_INDEX}) created in the bench database; "
                             "without it the index is dropped, so the schema is exactly the migrations'")
    args = parser.parse_args()
    if args.phones < args.clients:
        parser.error("--phones must be >= --clients (every client has a phone)")

    ruleset, source = load(DEFAULT_FILE)
    server = ensure_database(Settings(database_url=args.database_url or os.environ.get("DATABASE_URL") or None))
    from sqlalchemy.engine import make_url
    url = make_url(server).set(database=DB_NAME).render_as_string(hide_password=False)
    conninfo = _conninfo(url)
    meta = populated(conninfo, args) if args.keep else None
    if meta is not None:
        now = datetime.fromisoformat(meta["bench_now"])
        print(f"reusing {mask_url(url)}: already populated with the same sizes "
              f"(generated {meta['generated_at']})")
    else:
        drop_database(server, DB_NAME)
        create_database(server, DB_NAME)
        now = bench_now(ruleset)
        print(f"generating {mask_url(url)}: {args.clients:,} clients, {args.phones:,} phones, "
              f"{args.contacts:,} contacts, {args.attempts:,} call attempts", flush=True)
        generate(url, conninfo, args, ruleset, source, now)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("DROP INDEX IF EXISTS ix_call_attempts_started_at")
        if args.extra_index:
            conn.execute(EXTRA_INDEX)
            conn.execute("ANALYZE call_attempts")
            print(f"suggested index created for this measurement: {EXTRA_INDEX}")
    with psycopg.connect(conninfo) as conn:
        pg_version = conn.execute("SHOW server_version").fetchone()[0]
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("clients", "client_phones", "deals", "contacts", "operators", "call_attempts")}
        shared_buffers = conn.execute("SHOW shared_buffers").fetchone()[0]
    print("rows: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    print(f"decision moment: {now.astimezone(MSK):%a %Y-%m-%d %H:%M} Europe/Moscow "
          "(departments open; today's workload generated before it)")

    rng = random.Random(20261123)
    results = []
    try:
        for run_no in range(1, args.runs + 1):
            numbers = pick_numbers(conninfo, args, args.warmup + args.lookups, rng)
            r = asyncio.run(measure(url, ruleset, numbers, args.warmup, now, args.views_cache))
            results.append(r)
            c = r["check"]
            print(f"run {run_no}: decision p50 {r['total']['p50']:.2f} p90 {r['total']['p90']:.2f} "
                  f"p99 {r['total']['p99']:.2f} max {r['total']['max']:.2f} ms | caller_facts p50 "
                  f"{r['facts']['p50']:.2f} p99 {r['facts']['p99']:.2f} ms | SQL only p50 "
                  f"{r['facts_sql']['p50']:.2f} p99 {r['facts_sql']['p99']:.2f} ms", flush=True)
            print("       by caller: " + "; ".join(f"{k} p50 {v['p50']:.2f} p99 {v['p99']:.2f}"
                                              for k, v in sorted(r["by_kind"].items())))
            print(f"       rules fired: {dict(sorted(c['rules'].items()))}; personal manager first: "
                  f"{c['personal']}; operator chosen: {c['chosen']}/{args.lookups}")
        known = e164_of(rng.randint(1, args.phones))
        asyncio.run(explain(url, known, "a known number", ruleset))
        called = next(n for k, n in pick_numbers(conninfo, args, 200, rng) if k == "active_sales")
        asyncio.run(explain(url, called, "an active-sales-called client", ruleset))
        asyncio.run(explain_views(url, "current_sales", now))
    finally:
        if not args.keep:
            drop_database(server, DB_NAME)
            print(f"\ndropped {DB_NAME} (use --keep to keep it)")

    m = machine()
    worst = max(r["total"]["p99"] for r in results)
    verdict = "meets" if worst <= 5.0 else "MISSES"
    cmd = "scripts/bench_routing.py " + " ".join(sys.argv[1:])
    print("\n## Markdown\n")
    print(f"Command: `.cache/venv/bin/python {cmd.strip()}`  ")
    print(f"Machine: {m['nproc']} cores, {m['ram']} RAM, Python {m['python']}, PostgreSQL {pg_version} "
          f"(shared_buffers {shared_buffers}), same host over TCP 127.0.0.1  ")
    print("Data: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + "  ")
    print(f"{args.lookups:,} timed decisions per run after {args.warmup:,} warm-up; mix 70% known, "
          "20% unknown, 10% active-sales-called. Schema: "
          + ("migrations + suggested `ix_call_attempts_started_at`" if args.extra_index else "migrations as-is")
          + f"; operator list reused for {args.views_cache:g} s. Times in ms.\n")
    print("| run | decision p50 | p90 | p99 | max | caller_facts p50 | p90 | p99 | max |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(results, 1):
        print(f"| {i} | {fmt(r['total'])} | {fmt(r['facts'])} |")
    print(f"\nVerdict: worst p99 of the decision {worst:.2f} ms — {verdict} the target (p99 <= 5 ms).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
