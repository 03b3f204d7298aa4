"""Operators against the real Postgres: add, status changes with their history, the pause
toggle, today's statistics for distribution (one query), violations, and the ``ivr operator`` CLI."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select

from ivr.cli import main
from models.db import make_async_engine
from models.operators import (
    OperatorError, UnknownDepartment, UnknownOperator, add_operator, department_views, list_operators,
    operator_by_extension, operator_events, operators_in_department, record_operator_event, record_violation,
    set_status, toggle_pause,
)
from models.tables import CallAttempt, Department, OperatorEvent, OperatorStatus, Violation

pytestmark = pytest.mark.db


@pytest.fixture
async def engine(database_url):
    eng = make_async_engine(database_url)
    yield eng
    await eng.dispose()


def _ext() -> str:
    return str(10_000 + secrets.randbelow(89_999_999))


async def _department(engine, wrapup: int = 10) -> str:
    code = "d" + secrets.token_hex(4)
    async with engine.begin() as conn:
        await conn.execute(insert(Department).values(code=code, name=f"Отдел {code}", wrapup_seconds=wrapup))
    return code


# --- add -----------------------------------------------------------------------------------------
async def test_add_operator_generates_a_secret_logs_him_in_and_records_it(engine):
    dep = await _department(engine)
    ext = _ext()
    async with engine.begin() as conn:
        row = await add_operator(conn, "  Иванов   Пётр ", ext, dep, sip_contact="sip:10.0.0.5:5062")
    assert row.name == "Иванов Пётр" and row.extension == ext and row.department == dep
    assert row.status is OperatorStatus.available and row.sip_contact == "sip:10.0.0.5:5062"
    assert row.sip_secret and len(row.sip_secret) >= 20
    async with engine.connect() as conn:
        other = await add_operator(conn, "Петров", _ext(), dep)
        assert other.sip_secret != row.sip_secret
        await conn.rollback()
        events = await operator_events(conn, ext)
    assert [(e.event, e.status, e.cause) for e in events] == [("login", OperatorStatus.available, "cli")]


@pytest.mark.parametrize("name,ext,error", [
    ("Иванов", "1", "2 to 8 digits"),
    ("Иванов", "123456789", "2 to 8 digits"),
    ("Иванов", "12a", "2 to 8 digits"),
    ("Ива\nнов", "{ext}", "not allowed"),
    ('Ivanov"; [evil]', "{ext}", "not allowed"),
    ("   ", "{ext}", "empty"),
])
async def test_add_operator_refuses_bad_input_with_a_clear_message(engine, name, ext, error):
    dep = await _department(engine)
    async with engine.connect() as conn:
        with pytest.raises(OperatorError, match=error):
            await add_operator(conn, name, ext.format(ext=_ext()), dep)


async def test_add_operator_unknown_department_and_taken_extension(engine):
    dep = await _department(engine)
    ext = _ext()
    async with engine.begin() as conn:
        await add_operator(conn, "Иванов", ext, dep)
    async with engine.connect() as conn:
        with pytest.raises(UnknownDepartment, match="unknown department 'nosuch'"):
            await add_operator(conn, "Петров", _ext(), "nosuch")
        with pytest.raises(OperatorError, match=f"extension {ext} is taken"):
            await add_operator(conn, "Петров", ext, dep)


# --- status --------------------------------------------------------------------------------------
async def test_status_changes_write_the_operator_and_his_history_together(engine):
    dep = await _department(engine)
    ext = _ext()
    async with engine.begin() as conn:
        await add_operator(conn, "Сидоров", ext, dep)
    async with engine.begin() as conn:
        paused = await set_status(conn, ext, OperatorStatus.paused, reason="обед\x07", cause="cli")
    assert (paused.previous, paused.status, paused.event, paused.reason) == (
        OperatorStatus.available, OperatorStatus.paused, "pause", "обед")
    async with engine.begin() as conn:
        again = await set_status(conn, ext, OperatorStatus.paused, reason="обед", cause="cli")
        assert not again.changed
        auto = await set_status(conn, ext, OperatorStatus.paused, reason="не ответил в 14:05", cause="auto",
                                call_uid="c-1")
        assert auto.changed and auto.reason == "не ответил в 14:05"
        back = await set_status(conn, ext, OperatorStatus.available, cause="feature_code")
        assert back.event == "rejoin" and back.reason is None
        out = await set_status(conn, ext, OperatorStatus.logged_out, cause="cli")
        assert out.event == "logout"
        inn = await set_status(conn, ext, OperatorStatus.available, cause="cli")
        assert inn.event == "login"
    async with engine.connect() as conn:
        row = await operator_by_extension(conn, ext)
        events = await operator_events(conn, ext)
    assert row.status is OperatorStatus.available and row.pause_reason is None
    assert [(e.event, e.reason, e.cause) for e in events] == [
        ("login", None, "cli"), ("pause", "обед", "cli"), ("pause", "не ответил в 14:05", "auto"),
        ("rejoin", None, "feature_code"), ("logout", None, "cli"), ("login", None, "cli")]
    assert events[2].call_uid == "c-1"


async def test_a_failed_transaction_keeps_neither_the_status_nor_the_event(engine):
    dep = await _department(engine)
    ext = _ext()
    async with engine.begin() as conn:
        await add_operator(conn, "Смирнов", ext, dep)
    with pytest.raises(RuntimeError):
        async with engine.begin() as conn:
            await set_status(conn, ext, OperatorStatus.paused, reason="x", cause="cli")
            raise RuntimeError("crash after the write")
    async with engine.connect() as conn:
        assert (await operator_by_extension(conn, ext)).status is OperatorStatus.available
        assert [e.event for e in await operator_events(conn, ext)] == ["login"]


async def test_toggle_pause_and_the_default_reason(engine):
    dep = await _department(engine)
    ext = _ext()
    async with engine.begin() as conn:
        await add_operator(conn, "Кузнецов", ext, dep)
        first = await toggle_pause(conn, ext, cause="feature_code")
        second = await toggle_pause(conn, ext, cause="feature_code")
        await set_status(conn, ext, OperatorStatus.logged_out, cause="cli")
        third = await toggle_pause(conn, ext, cause="feature_code")
    assert (first.event, first.status, first.reason) == ("pause", OperatorStatus.paused, "пауза по коду")
    assert (second.event, second.status) == ("rejoin", OperatorStatus.available)
    assert (third.event, third.status) == ("login", OperatorStatus.available)


async def test_unknown_extension_is_a_clear_error(engine):
    async with engine.connect() as conn:
        with pytest.raises(UnknownOperator, match="no operator with extension '99999998'"):
            await set_status(conn, "99999998", OperatorStatus.paused, cause="cli")
        with pytest.raises(UnknownOperator):
            await toggle_pause(conn, "99999998", cause="feature_code")
        assert await operator_by_extension(conn, "99999998") is None


async def test_record_operator_event_keeps_misses_in_the_history(engine):
    dep = await _department(engine)
    ext = _ext()
    async with engine.begin() as conn:
        row = await add_operator(conn, "Попов", ext, dep)
        await record_operator_event(conn, row.id, "ring_no_answer", cause="auto", call_uid="c-77")
    async with engine.connect() as conn:
        events = (await conn.execute(select(OperatorEvent.event, OperatorEvent.call_uid)
                                     .where(OperatorEvent.operator_id == row.id).order_by(OperatorEvent.id))).all()
    assert [tuple(e) for e in events] == [("login", None), ("ring_no_answer", "c-77")]


# --- department views ----------------------------------------------------------------------------
async def test_department_views_aggregate_today_from_call_attempts(engine):
    dep = await _department(engine, wrapup=30)
    other_dep = await _department(engine)
    e1, e2, e3, e4 = _ext(), _ext(), _ext(), _ext()
    async with engine.begin() as conn:
        o1 = await add_operator(conn, "Один", e1, dep)
        o2 = await add_operator(conn, "Два", e2, dep)
        await add_operator(conn, "Три", e3, dep)
        await add_operator(conn, "Чужой", e4, other_dep)
        await set_status(conn, e3, OperatorStatus.paused, reason="обед", cause="cli")
    day_start = datetime.now(timezone.utc) - timedelta(hours=3)
    t = day_start + timedelta(hours=1)

    def attempt(op, ext, minutes, outcome, talk=None, call="c"):
        started = t + timedelta(minutes=minutes)
        answered = started + timedelta(seconds=5) if outcome == "answered" else None
        return dict(call_uid=f"{call}-{minutes}", operator_id=op.id, extension=ext, step="department",
                    department_code=dep, started_at=started, answered_at=answered, outcome=outcome,
                    ended_at=(answered + timedelta(seconds=talk)) if talk else started + timedelta(seconds=15),
                    talk_seconds=talk)

    async with engine.begin() as conn:
        await conn.execute(insert(CallAttempt), [
            attempt(o1, e1, -24 * 60, "answered", 500),      # yesterday: not counted
            attempt(o1, e1, 0, "answered", 100),
            attempt(o1, e1, 10, "no_answer"),
            attempt(o1, e1, 20, "answered", 60),
            attempt(o2, e2, 5, "rejected"),
        ])
    async with engine.connect() as conn:
        views = await department_views(conn, dep, day_start=day_start)
    by = {v.extension: v for v in views}
    assert sorted(by) == sorted([e1, e2, e3])   # only this department, paused one included
    v1, v2, v3 = by[e1], by[e2], by[e3]
    assert (v1.calls_today, v1.offers_today, v1.talk_seconds_today) == (2, 3, 160.0)
    assert v1.last_offer_at == t + timedelta(minutes=20)
    assert v1.last_call_end_at == t + timedelta(minutes=20, seconds=65)
    assert v1.wrapup_until == v1.last_call_end_at + timedelta(seconds=30)
    assert v1.status == "available" and v1.busy is False and v1.department == dep and v1.name == "Один"
    assert (v2.calls_today, v2.offers_today, v2.talk_seconds_today) == (0, 1, 0.0)
    assert v2.last_call_end_at is None and v2.wrapup_until is None and v2.passed_last_offer() is False  # added after it
    assert (v3.status, v3.offers_today, v3.last_offer_at) == ("paused", 0, None)
    assert v3.status_since is not None


async def test_department_views_is_one_query(engine):
    from sqlalchemy import event

    dep = await _department(engine)
    async with engine.begin() as conn:
        for _ in range(3):
            await add_operator(conn, "Оператор", _ext(), dep)
    statements = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine.sync_engine, "before_cursor_execute", listener)
    try:
        async with engine.connect() as conn:
            views = await department_views(conn, dep, day_start=datetime.now(timezone.utc) - timedelta(hours=1))
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", listener)
    assert len(views) == 3
    assert len([s for s in statements if "call_attempts" in s]) == 1 and len(statements) == 1


async def test_list_and_department_listing(engine):
    dep = await _department(engine)
    e1, e2 = sorted([_ext(), _ext()])
    async with engine.begin() as conn:
        await add_operator(conn, "Б", e2, dep)
        await add_operator(conn, "А", e1, dep)
        assert [r.extension for r in await operators_in_department(conn, dep)] == [e1, e2]
        assert {e1, e2} <= {r.extension for r in await list_operators(conn)}


# --- violations ----------------------------------------------------------------------------------
async def test_record_violation(engine):
    dep = await _department(engine)
    async with engine.begin() as conn:
        op = await add_operator(conn, "Медленный", _ext(), dep)
        vid = await record_violation(conn, op.id, "c-9", "reaction", 15, 22.5, note="assigned manager")
        with pytest.raises(OperatorError, match="violation kind 'late'"):
            await record_violation(conn, op.id, "c-9", "late", 15, 22.5)
    async with engine.connect() as conn:
        row = (await conn.execute(select(Violation).where(Violation.id == vid))).one()
    assert (row.operator_id, row.call_uid, row.kind, row.standard_seconds, row.delay_seconds, row.note) == (
        op.id, "c-9", "reaction", 15.0, 22.5, "assigned manager")


# --- CLI -----------------------------------------------------------------------------------------
def _sync_department(database_url: str) -> str:
    from models.db import make_engine

    code = "d" + secrets.token_hex(4)
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(Department).values(code=code, name=f"Отдел {code}"))
    finally:
        engine.dispose()
    return code


# CLI tests are plain functions: the commands run their own event loop (asyncio.run).
def test_operator_cli_add_list_pause_rejoin_logout_login_events(database_url):
    dep = _sync_department(database_url)
    ext = _ext()
    runner = CliRunner()
    db = ["--database-url", database_url]

    def run(*args):
        return runner.invoke(main, ["operator", *args, *db])

    added = run("add", "Васильева Анна", ext, dep, "--contact", "sip:127.0.0.1:5070")
    assert added.exit_code == 0, added.output
    assert f"added operator {ext} Васильева Анна to {dep}" in added.output
    paused = run("pause", ext, "--reason", "совещание")
    assert paused.exit_code == 0 and "available -> paused (совещание)" in paused.output
    listed = run("list", "--department", dep)
    assert listed.exit_code == 0, listed.output
    header, _, line = listed.output.splitlines()[:3]
    assert header.split() == ["ext", "name", "department", "status", "reason", "since"]
    assert line.split()[:6] == [ext, "Васильева", "Анна", dep, "paused", "совещание"]
    assert run("pause", ext, "--reason", "совещание").output.strip().endswith("is already paused (совещание)")
    assert "paused -> available" in run("rejoin", ext).output
    assert "available -> logged_out" in run("logout", ext).output
    assert "logged_out -> available" in run("login", ext).output
    events = run("events", ext, "--since", "2000-01-01")
    assert events.exit_code == 0, events.output
    kinds = [ln.split()[2] for ln in events.output.splitlines()[2:]]
    assert kinds == ["login", "pause", "rejoin", "logout", "login"]
    assert "совещание" in events.output


def test_operator_cli_clear_errors(database_url):
    dep = _sync_department(database_url)
    runner = CliRunner()
    db = ["--database-url", database_url]
    for args, message in [
        (["pause", "99999997"], "no operator with extension '99999997'"),
        (["events", "99999997"], "no operator with extension '99999997'"),
        (["add", "Иванов", _ext(), "nosuchdep"], "unknown department 'nosuchdep'"),
        (["add", "Иванов", "1", dep], "use 2 to 8 digits"),
        (["list", "--department", "nosuchdep"], "unknown department 'nosuchdep'"),
        (["events", "201", "--since", "yesterday"], "use YYYY-MM-DD"),
    ]:
        result = runner.invoke(main, ["operator", *args, *db])
        assert result.exit_code != 0, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    dead = runner.invoke(main, ["operator", "list", "--database-url", "postgresql://ivr:s3cret@127.0.0.1:1/ivr"])
    assert dead.exit_code == 1 and "unreachable" in dead.output and "s3cret" not in dead.output
