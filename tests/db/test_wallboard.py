"""Wallboard against the real Postgres: the snapshot from rows inserted directly (every operator
state, waiting calls, today's counts), the NOTIFY of migration 0009 on an operators update, and
the SSE endpoint delivering a fresh snapshot within a second of a change (aiohttp test server;
a bare app with a stand-in for the console core's login middleware)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text

from ivr.web.wallboard import HUB, floor_snapshot, setup_wallboard
from models.db import make_async_engine

pytestmark = pytest.mark.db

UTC = timezone.utc


@pytest.fixture
async def engine(database_url):
    eng = make_async_engine(database_url)
    yield eng
    await eng.dispose()


def _ext() -> str:
    return str(10_000 + secrets.randbelow(89_999_999))


async def _department(conn, wrapup: int = 60) -> tuple[int, str]:
    code = "w" + secrets.token_hex(4)
    dep = (await conn.execute(text(
        "INSERT INTO departments (code, name, wrapup_seconds, timezone) VALUES (:c, :n, :w, 'UTC') RETURNING id"),
        {"c": code, "n": f"Отдел {code}", "w": wrapup})).scalar()
    return dep, code


async def _operator(conn, dep: int, name: str, status: str = "available", reason: str | None = None,
                    since: datetime | None = None) -> tuple[int, str]:
    ext = _ext()
    op = (await conn.execute(text(
        "INSERT INTO operators (name, extension, department_id, status, pause_reason, status_since) "
        "VALUES (:n, :e, :d, CAST(:s AS operator_status), :r, :t) RETURNING id"),
        {"n": name, "e": ext, "d": dep, "s": status, "r": reason, "t": since or datetime.now(UTC)})).scalar()
    return op, ext


async def _call(conn, code: str, started: datetime, *, answered_by: int | None = None, ended: datetime | None = None,
                result: str | None = None, wait: float | None = None, caller: str = "+79161234567",
                client: int | None = None) -> str:
    uid = "t-" + secrets.token_hex(8)
    await conn.execute(text(
        "INSERT INTO calls (call_uid, direction, from_number, from_e164, started_at, ended_at, result, "
        "department_code, answered_by_operator_id, wait_seconds, client_id) "
        "VALUES (:u, 'inbound', :f, :f, :s, :e, :r, :d, :a, :w, :c)"),
        {"u": uid, "f": caller, "s": started, "e": ended, "r": result, "d": code, "a": answered_by, "w": wait,
         "c": client})
    return uid


async def _attempt(conn, uid: str, op: int, ext: str, code: str, started: datetime, *, outcome: str | None = None,
                   ended: datetime | None = None, answered: datetime | None = None) -> None:
    await conn.execute(text(
        "INSERT INTO call_attempts (call_uid, operator_id, extension, step, department_code, started_at, "
        "answered_at, ended_at, outcome) VALUES (:u, :o, :e, 'department', :d, :s, :a, :en, :out)"),
        {"u": uid, "o": op, "e": ext, "d": code, "s": started, "a": answered, "en": ended, "out": outcome})


async def _floor(engine):
    """A department with one operator in each state, calls waiting, today's and yesterday's rows."""
    now = datetime.now(UTC)
    ids = {}
    async with engine.begin() as conn:
        dep, code = await _department(conn)
        ids["dep"], ids["code"] = dep, code
        ids["free"] = await _operator(conn, dep, "Свободный", since=now - timedelta(minutes=5))
        ids["paused"] = await _operator(conn, dep, "Пауза", "paused", "обед", now - timedelta(minutes=3))
        ids["out"] = await _operator(conn, dep, "Ушёл", "logged_out")
        ids["ringing"] = await _operator(conn, dep, "Звонят")
        ids["talking"] = await _operator(conn, dep, "Говорит")
        ids["wrapup"] = await _operator(conn, dep, "Поствызов")
        client = (await conn.execute(text("INSERT INTO clients (full_name) VALUES ('Пётр Сидоров') RETURNING id")
                                     )).scalar()
        # ringing: an open attempt for a call still waiting
        waiting1 = await _call(conn, code, now - timedelta(seconds=40))
        await _attempt(conn, waiting1, ids["ringing"][0], ids["ringing"][1], code, now - timedelta(seconds=4))
        await _call(conn, code, now - timedelta(seconds=10))
        # talking: the call answered by him, attempt still open (finished when the call ends)
        talk = await _call(conn, code, now - timedelta(seconds=100), answered_by=ids["talking"][0], wait=20,
                           result="answered", client=client)
        await _attempt(conn, talk, ids["talking"][0], ids["talking"][1], code, now - timedelta(seconds=85))
        # wrap-up: answered call that ended 5 s ago (department wrap-up 60 s)
        done = await _call(conn, code, now - timedelta(seconds=200), answered_by=ids["wrapup"][0], wait=5,
                           ended=now - timedelta(seconds=5), result="answered")
        await _attempt(conn, done, ids["wrapup"][0], ids["wrapup"][1], code, now - timedelta(seconds=198),
                       outcome="answered", answered=now - timedelta(seconds=195), ended=now - timedelta(seconds=5))
        # missed today; a no-answer ring of the free operator long ago (not ringing any more)
        missed = await _call(conn, code, now - timedelta(seconds=300), ended=now - timedelta(seconds=250),
                             result="callback_requested")
        await _attempt(conn, missed, ids["free"][0], ids["free"][1], code, now - timedelta(seconds=290),
                       outcome="no_answer", ended=now - timedelta(seconds=275))
        await _call(conn, code, now - timedelta(seconds=400), ended=now - timedelta(seconds=390),
                    result="caller_hangup")
        # yesterday: counted nowhere
        await _call(conn, code, now - timedelta(days=1, hours=1), answered_by=ids["free"][0],
                    ended=now - timedelta(days=1), result="answered")
        await _call(conn, code, now - timedelta(days=1, hours=1), ended=now - timedelta(days=1),
                    result="callback_requested")
        for at in (now - timedelta(minutes=1), now - timedelta(days=1, hours=1)):
            await conn.execute(text(
                "INSERT INTO violations (operator_id, kind, standard_seconds, delay_seconds, at) "
                "VALUES (:o, 'reaction', 10, 25, :at)"), {"o": ids["free"][0], "at": at})
    return now, ids


def _by_name(dept: dict) -> dict:
    return {o["name"]: o for o in dept["operators"]}


async def test_snapshot_shows_every_state_and_todays_counts(engine):
    now, ids = await _floor(engine)
    async with engine.connect() as conn:
        snap = await floor_snapshot(conn, now, ids["dep"])
    assert snap["at"] and len(snap["departments"]) == 1
    d = snap["departments"][0]
    assert d["code"] == ids["code"]
    ops = _by_name(d)
    assert {n: o["state"] for n, o in ops.items()} == {
        "Свободный": "available", "Пауза": "paused", "Ушёл": "logged_out", "Звонят": "ringing",
        "Говорит": "on_call", "Поствызов": "wrapup"}
    assert ops["Пауза"]["reason"] == "обед"
    assert datetime.fromisoformat(ops["Пауза"]["since"]) == pytest.approx(now - timedelta(minutes=3),
                                                                          abs=timedelta(seconds=1))
    assert ops["Говорит"]["with"] == "Пётр Сидоров"
    # on a call since the answer: started + wait
    assert datetime.fromisoformat(ops["Говорит"]["since"]) == pytest.approx(now - timedelta(seconds=80),
                                                                           abs=timedelta(seconds=1))
    assert ops["Звонят"]["with"] == "+79161234567"
    assert datetime.fromisoformat(ops["Поствызов"]["until"]) > now
    assert d["waiting"] == 2 and d["longest_wait_s"] == pytest.approx(40, abs=1)
    assert d["answered_today"] == 2          # the live call and the finished one
    assert d["missed_today"] == 2            # callback requested + caller hung up
    assert d["violations_today"] == 1
    json.dumps(snap)                          # JSON-ready as is


async def test_wrapup_ends_and_stale_rings_are_ignored(engine):
    now, ids = await _floor(engine)
    async with engine.begin() as conn:
        # a ring left open by a controller that died an hour ago is not "ringing"
        await _attempt(conn, "dead-" + secrets.token_hex(4), ids["free"][0], ids["free"][1], ids["code"],
                       now - timedelta(hours=1))
    async with engine.connect() as conn:
        later = await floor_snapshot(conn, now + timedelta(seconds=70), ids["dep"])
    ops = _by_name(later["departments"][0])
    assert ops["Поствызов"]["state"] == "available"
    assert ops["Свободный"]["state"] == "available"
    with pytest.raises(ValueError):
        async with engine.connect() as conn:
            await floor_snapshot(conn, datetime.now())


async def test_notify_fires_on_operator_update(engine, database_url):
    async with engine.begin() as conn:
        dep, _ = await _department(conn)
        op, _ = await _operator(conn, dep, "Слушаемый")
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as listener:
        await listener.execute("LISTEN ivr_floor")
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE operators SET status = 'paused', pause_reason = 'x' WHERE id = :i"),
                               {"i": op})
        got = [n async for n in listener.notifies(timeout=1.0, stop_after=1)]
    assert got and got[0].channel == "ivr_floor" and got[0].payload == "operators"


# --- web ---------------------------------------------------------------------------------------
def _app(engine, user) -> web.Application:
    @web.middleware
    async def fake_login(request, handler):      # the console core's middleware sets request["user"]
        if user is not None:
            request["user"] = user
        return await handler(request)

    app = web.Application(middlewares=[fake_login])
    app["engine"] = engine
    setup_wallboard(app)
    return app


async def _next_snapshot(resp, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    data = None
    while True:
        line = await asyncio.wait_for(resp.content.readline(), max(deadline - time.monotonic(), 0.01))
        line = line.decode().rstrip("\n")
        if line.startswith("data: "):
            data = line[6:]
        elif line == "" and data is not None:
            return json.loads(data)


async def _until_state(resp, name: str, state: str, timeout: float) -> dict:
    """Snapshots from the stream until ``name`` is in ``state`` (an earlier push may still be
    in flight when the change is made); fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        snap = await _next_snapshot(resp, deadline - time.monotonic())
        me = _by_name(snap["departments"][0])[name]
        if me["state"] == state:
            return me


async def test_sse_pushes_a_fresh_snapshot_within_a_second(engine):
    async with engine.begin() as conn:
        dep, _ = await _department(conn)
        op, ext = await _operator(conn, dep, "Живой")
    head = SimpleNamespace(role="head", department_id=dep)
    app = _app(engine, head)
    async with TestClient(TestServer(app)) as client:
        hub = app[HUB]
        for _ in range(50):                      # the hub's LISTEN connection is up
            if hub.mode == "listen":
                break
            await asyncio.sleep(0.05)
        assert hub.mode == "listen"
        resp = await client.get("/wallboard/events")
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        first = await _next_snapshot(resp, 2.0)
        assert [d["id"] for d in first["departments"]] == [dep]      # a head sees his floor only
        assert _by_name(first["departments"][0])["Живой"]["state"] == "available"

        t0 = time.monotonic()
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE operators SET status = 'paused', pause_reason = 'обед', "
                                    "status_since = now() WHERE id = :i"), {"i": op})
        me = await _until_state(resp, "Живой", "paused", 1.0)
        assert time.monotonic() - t0 < 1.0
        assert me["reason"] == "обед"

        # ringing, then on a call: what the controller writes when it rings him and when he answers
        now = datetime.now(UTC)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE operators SET status = 'available' WHERE id = :i"), {"i": op})
            code = (await conn.execute(text("SELECT code FROM departments WHERE id = :d"), {"d": dep})).scalar()
            uid = await _call(conn, code, now)
            await _attempt(conn, uid, op, ext, code, now)
        assert (await _until_state(resp, "Живой", "ringing", 1.0))["with"] == "+79161234567"
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE calls SET answered_by_operator_id = :o, result = 'answered', "
                                    "wait_seconds = 2 WHERE call_uid = :u"), {"o": op, "u": uid})
        await _until_state(resp, "Живой", "on_call", 1.0)
        assert len(hub.clients) == 1
        resp.close()
        for _ in range(40):                      # the closed stream's client is removed
            if not hub.clients:
                break
            await asyncio.sleep(0.05)
        # a write notices the gone client at the latest at the next heartbeat; nudge one
        hub.poke()
        for _ in range(40):
            if not hub.clients:
                break
            await asyncio.sleep(0.05)
        assert not hub.clients


async def test_page_and_snapshot_json(engine):
    async with engine.begin() as conn:
        dep, _ = await _department(conn)
        await _operator(conn, dep, "Оператор <b>")
    app = _app(engine, SimpleNamespace(role="admin", department_id=None))
    async with TestClient(TestServer(app)) as client:
        page = await client.get("/wallboard")
        body = await page.text()
        assert page.status == 200
        assert "Оператор &lt;b&gt;" in body and "Оператор <b>" not in body.split("wb-initial")[0]
        assert 'src="/wallboard/wallboard.js"' in body and "\\u003cb>" in body
        js = await client.get("/wallboard/wallboard.js")
        assert js.status == 200 and "EventSource" in await js.text()
        snap = await (await client.get("/wallboard/snapshot")).json()
        assert dep in [d["id"] for d in snap["departments"]]


async def test_no_user_no_wallboard(engine):
    async with TestClient(TestServer(_app(engine, None))) as client:
        assert (await client.get("/wallboard")).status == 401
        assert (await client.get("/wallboard/events")).status == 401


async def test_manager_may_not_see_the_wallboard(engine):
    async with TestClient(TestServer(_app(engine, SimpleNamespace(role="manager", department_id=None)))) as client:
        assert (await client.get("/wallboard")).status == 403
        assert (await client.get("/wallboard/events")).status == 403


async def test_inside_the_console_core(engine):
    """make_app (the console core) calls setup_wallboard / setup_campaigns; with a real login
    session the page renders in its base.html and the event stream pushes changes."""
    core = pytest.importorskip("ivr.web.app")
    from ivr.web import auth

    async with engine.begin() as conn:
        dep, code = await _department(conn)
        op, _ = await _operator(conn, dep, "В консоли")
        user = await auth.add_user(conn, "head" + secrets.token_hex(3), "Long-enough-pass-42", "head",
                                   display_name="Начальник", department_code=code)
        token, _csrf = await auth.create_session(conn, user.id)
    app = core.make_app(engine)
    async with TestClient(TestServer(app)) as client:
        client.session.cookie_jar.update_cookies({core.COOKIE: token})
        page = await client.get("/wallboard")
        body = await page.text()
        assert page.status == 200 and "Начальник" in body and "wallboard.js" in body and "В консоли" in body
        assert (await client.get("/campaigns")).status == 200
        resp = await client.get("/wallboard/events")
        assert resp.status == 200
        first = await _next_snapshot(resp, 2.0)
        assert [d["id"] for d in first["departments"]] == [dep]
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE operators SET status = 'logged_out' WHERE id = :i"), {"i": op})
        await _until_state(resp, "В консоли", "logged_out", 1.0)
        resp.close()
