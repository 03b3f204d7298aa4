"""Reports against the real Postgres: violations by period, the inbound call table with the
operators tried (``ivr calls --today``), and ``ivr calls list`` still working."""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import insert

from ivr.cli import main
from models.db import make_async_engine
from models.operators import add_operator, record_violation
from models.reports import inbound_calls, violations
from models.tables import Call, CallAttempt, CallDirection, Client, Department

pytestmark = pytest.mark.db


def _ext() -> str:
    return str(10_000 + secrets.randbelow(89_999_999))


def _run(database_url, work):
    async def go():
        engine = make_async_engine(database_url)
        try:
            async with engine.begin() as conn:
                return await work(conn)
        finally:
            await engine.dispose()
    return asyncio.run(go())


@pytest.fixture(scope="module")
def world(database_url):
    """Two operators, a known client's call tried on both (first no answer, then answered), an
    anonymous call nobody answered, an outbound call (not in the inbound table), violations."""
    tag = secrets.token_hex(3)
    dep = "r" + tag
    first, second = _ext(), _ext()
    now = datetime.now(timezone.utc)
    t = now - timedelta(minutes=30)
    known, anon, outbound = f"k-{tag}", f"a-{tag}", f"o-{tag}"

    async def work(conn):
        await conn.execute(insert(Department).values(code=dep, name="Опт"))
        o1 = await add_operator(conn, "Первый", first, dep)
        o2 = await add_operator(conn, "Вторая", second, dep)
        client_id = (await conn.execute(insert(Client).values(full_name=f"ООО Ромашка {tag}")
                                        .returning(Client.id))).scalar_one()
        for row in [
            dict(call_uid=known, direction=CallDirection.inbound, from_number="+79161234567", client_id=client_id,
                 started_at=t, answered_at=t + timedelta(seconds=25), ended_at=t + timedelta(seconds=85),
                 result="answered", rule="known_client", department_code=dep, answered_by_operator_id=o2.id,
                 wait_seconds=25.2, talk_seconds=60.4),
            dict(call_uid=anon, direction=CallDirection.inbound, from_number="anonymous",
                 started_at=t + timedelta(minutes=5), ended_at=t + timedelta(minutes=6), result="callback",
                 rule="default", department_code=dep, wait_seconds=60),
            dict(call_uid=outbound, direction=CallDirection.outbound, from_number="100",
                 started_at=t + timedelta(minutes=6), result="answered"),
        ]:
            await conn.execute(insert(Call).values(**row))
        await conn.execute(insert(CallAttempt), [
            dict(call_uid=known, operator_id=o2.id, extension=second, step="department", department_code=dep,
                 started_at=t + timedelta(seconds=16), outcome="answered", talk_seconds=60.4),
            dict(call_uid=known, operator_id=o1.id, extension=first, step="department", department_code=dep,
                 started_at=t + timedelta(seconds=1), outcome="no_answer", talk_seconds=None),
        ])
        await record_violation(conn, o1.id, known, "reaction", 15, 16.0, at=t + timedelta(seconds=16))
        await record_violation(conn, o2.id, None, "summon", 120, 300.0, at=t - timedelta(days=3))
        return dict(dep=dep, first=first, second=second, known=known, anon=anon, outbound=outbound, t=t, tag=tag)

    return _run(database_url, work)


def test_inbound_calls_lists_operators_tried_in_ring_order(database_url, world):
    rows = _run(database_url, lambda conn: inbound_calls(conn, world["t"] - timedelta(seconds=1)))
    mine = {r.call_uid: r for r in rows if r.call_uid.endswith(world["tag"])}
    assert set(mine) == {world["known"], world["anon"]}            # outbound left out
    known = mine[world["known"]]
    assert known.tried == f"{world['first']} no_answer, {world['second']} answered"
    assert known.answered_by == f"{world['second']} Вторая"
    assert known.client_name == f"ООО Ромашка {world['tag']}" and known.rule == "known_client"
    assert (known.wait_seconds, known.talk_seconds, known.result) == (25.2, 60.4, "answered")
    anon = mine[world["anon"]]
    assert (anon.tried, anon.answered_by, anon.client_name, anon.result) == ("", None, None, "callback")
    later = _run(database_url, lambda conn: inbound_calls(conn, world["t"] + timedelta(minutes=1)))
    assert world["known"] not in {r.call_uid for r in later}


def test_violations_by_period(database_url, world):
    t = world["t"]
    recent = _run(database_url, lambda conn: violations(conn, t - timedelta(minutes=1)))
    assert [(v.extension, v.kind, v.standard_seconds, v.delay_seconds, v.call_uid) for v in recent
            if v.extension in (world["first"], world["second"])] == [(world["first"], "reaction", 15, 16, world["known"])]
    old = _run(database_url, lambda conn: violations(conn, t - timedelta(days=4), t - timedelta(days=1)))
    assert [(v.extension, v.kind, v.operator) for v in old if v.extension == world["second"]] == [
        (world["second"], "summon", "Вторая")]


def test_calls_today_table(database_url, world):
    runner = CliRunner()
    result = runner.invoke(main, ["calls", "--today", "--database-url", database_url])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["time", "from", "client", "rule"]
    for column in ("operators tried", "answered by", "wait s", "talk s", "result"):
        assert column in lines[0]
    known = next(ln for ln in lines if f"Ромашка {world['tag']}" in ln)
    assert f"{world['first']} no_answer, {world['second']} answered" in known
    assert f"{world['second']} Вторая" in known and " 25 " in known and " 60 " in known
    assert world["outbound"] not in result.output and "+79161234567" in known
    # the bare group prints the same; `calls list` still works; both filters at once is a usage error
    assert runner.invoke(main, ["calls", "--database-url", database_url]).output == result.output
    listed = runner.invoke(main, ["calls", "list", "--database-url", database_url, "--limit", "5"])
    assert listed.exit_code == 0 and "id=" in listed.output, listed.output
    both = runner.invoke(main, ["calls", "--today", "--since", "2020-01-01", "--database-url", database_url])
    assert both.exit_code == 2 and "not both" in both.output


def test_calls_since_and_until(database_url, world):
    runner = CliRunner()
    day = world["t"].astimezone().date()
    out = runner.invoke(main, ["calls", "--since", (day - timedelta(days=1)).isoformat(),
                               "--database-url", database_url]).output
    assert f"Ромашка {world['tag']}" in out
    empty = runner.invoke(main, ["calls", "--since", "2001-01-01", "--until", "2001-01-02",
                                 "--database-url", database_url])
    assert empty.exit_code == 0 and "no inbound calls since" in empty.output


def test_report_violations_cli(database_url, world):
    runner = CliRunner()
    day = world["t"].astimezone().date()
    result = runner.invoke(main, ["report", "violations", "--since", day.isoformat(), "--until", day.isoformat(),
                                  "--database-url", database_url])
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[0]
    assert header.split() == ["time", "operator", "extension", "kind", "standard", "s", "delay", "s", "call"]
    line = next(ln for ln in result.output.splitlines() if world["first"] in ln)
    assert "Первый" in line and "reaction" in line and " 15 " in line and " 16 " in line and world["known"] in line
    assert world["second"] not in result.output            # his violation is three days old
    bad = runner.invoke(main, ["report", "violations", "--since", "last week", "--database-url", database_url])
    assert bad.exit_code == 2 and "use YYYY-MM-DD" in bad.output
    missing = runner.invoke(main, ["report", "violations", "--database-url", database_url])
    assert missing.exit_code == 2 and "--since" in missing.output
