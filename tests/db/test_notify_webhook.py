"""The CRM webhook sender (ivr.notify.webhook) against the real Postgres and a real aiohttp
receiver on loopback: delivery with the right body, headers and a valid signature; a receiver
that is down (closed port), then up; 500 retried with backoff; timeouts; no URL configured; two
senders at once never POSTing the same row twice.

The module works in its own database (``<IVR_TEST_DB>_webhook``); each test empties the outbox."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import datetime, timedelta, timezone

import pytest
from aiohttp import web
from sqlalchemy import text

from ivr.notify.webhook import BASE_BACKOFF, WebhookSender, backoff, queue_counts, sign, verify
from models.db import make_async_engine
from models.migrate import upgrade
from tests.conftest import TEST_DB, drop_database, recreate_database

pytestmark = pytest.mark.db

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
SECRET = "s3cret-for-tests-only"


class Clock:
    def __init__(self, at: datetime = T0):
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **kw) -> None:
        self.at += timedelta(**kw)


@pytest.fixture(scope="module")
def db_url(pg_server_url):
    name = f"{TEST_DB}_webhook"
    url = recreate_database(pg_server_url, name)
    upgrade(url)
    yield url
    drop_database(pg_server_url, name)


@pytest.fixture
async def engine(db_url):
    engine = make_async_engine(db_url)
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM notification_jobs"))
    yield engine
    await engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A CRM stand-in: records every request; answers ``status`` (after ``delay`` seconds)."""

    def __init__(self, port: int, status: int = 200, delay: float = 0.0):
        self.port, self.status, self.delay = port, status, delay
        self.requests: list[tuple[dict, bytes]] = []
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?token=abc"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.json_response({"ok": self.status < 300}, status=self.status)

    async def start(self) -> "Receiver":
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def receiver():
    started: list[Receiver] = []

    async def make(status: int = 200, delay: float = 0.0, port: int | None = None) -> Receiver:
        r = await Receiver(port or free_port(), status, delay).start()
        started.append(r)
        return r

    yield make
    for r in started:
        await r.stop()


async def queue(engine, n: int = 1, at: datetime = T0) -> list[int]:
    """``n`` jobs that reached a final status, each with its queued webhook row."""
    async with engine.begin() as conn:
        client = (await conn.execute(text(
            "INSERT INTO clients (full_name) VALUES ('Webhook Test') RETURNING id"))).scalar()
        ids = []
        for i in range(n):
            job = (await conn.execute(text(
                "INSERT INTO notification_jobs (client_id, e164, template, status, result, external_id) "
                "VALUES (:c, '+79161234567', 'docs_sent', 'confirmed', 'confirmed', :ext) RETURNING id"),
                {"c": client, "ext": f"crm-hook-{client}-{i}"})).scalar()
            payload = {"event": "job.final", "job_id": job, "external_id": f"crm-hook-{client}-{i}",
                       "status": "confirmed", "result": "confirmed", "phone": "+79161234567",
                       "template": "docs_sent", "note": "Пётр Николаевич получил документы"}
            ids.append((await conn.execute(text(
                "INSERT INTO webhook_deliveries (job_id, event, payload, next_try_at) "
                "VALUES (:j, 'job.final', CAST(:p AS jsonb), :at) RETURNING id"),
                {"j": job, "p": json.dumps(payload, ensure_ascii=False), "at": at})).scalar())
        return ids


async def delivery(engine, delivery_id: int):
    async with engine.connect() as conn:
        return (await conn.execute(text("SELECT * FROM webhook_deliveries WHERE id = :id"),
                                   {"id": delivery_id})).mappings().one()


async def test_delivered_with_body_headers_and_valid_signature(engine, receiver):
    [hook_id] = await queue(engine)
    crm = await receiver()
    clock = Clock()
    sender = WebhookSender(engine, crm.url, SECRET, timeout=5, clock=clock)
    try:
        assert await sender.send_due_once() == 1
    finally:
        await sender.close()
    [(headers, body)] = crm.requests
    row = await delivery(engine, hook_id)
    assert json.loads(body.decode("utf-8")) == row["payload"]
    assert "Пётр Николаевич" in body.decode("utf-8")            # UTF-8, not \u escapes
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == f"job-{row['job_id']}-job.final"
    assert headers["X-Ivr-Signature"] == sign(SECRET, body)
    assert verify(SECRET, body, headers["X-Ivr-Signature"])
    assert not verify("other-secret", body, headers["X-Ivr-Signature"])
    assert (row["delivered_at"], row["tries"], row["last_error"]) == (T0, 0, None)

    # delivered rows are never sent again
    sender = WebhookSender(engine, crm.url, SECRET, clock=Clock(T0 + timedelta(days=1)))
    try:
        assert await sender.send_due_once() == 0
    finally:
        await sender.close()
    assert len(crm.requests) == 1


async def test_no_secret_no_signature_header(engine, receiver):
    await queue(engine)
    crm = await receiver()
    sender = WebhookSender(engine, crm.url, clock=Clock())
    try:
        await sender.send_due_once()
    finally:
        await sender.close()
    [(headers, _)] = crm.requests
    assert "X-Ivr-Signature" not in headers


async def test_receiver_down_backs_off_then_delivers_when_up(engine, receiver):
    [hook_id] = await queue(engine)
    port = free_port()                      # nothing listens there
    clock = Clock()
    sender = WebhookSender(engine, f"http://127.0.0.1:{port}/hook?token=abc", SECRET, timeout=2, clock=clock)
    try:
        assert await sender.send_due_once() == 1
        row = await delivery(engine, hook_id)
        assert row["delivered_at"] is None and row["tries"] == 1
        assert row["last_error"].startswith("connection failed")
        assert "token" not in row["last_error"] and SECRET not in row["last_error"]
        wait = (row["next_try_at"] - T0).total_seconds()
        assert 0.75 * BASE_BACKOFF <= wait <= BASE_BACKOFF

        # not due before the backoff ends
        clock.advance(seconds=wait - 1)
        assert await sender.send_due_once() == 0
        # still down: the second backoff doubles
        clock.advance(seconds=1)
        assert await sender.send_due_once() == 1
        row = await delivery(engine, hook_id)
        assert row["tries"] == 2
        assert 1.5 * BASE_BACKOFF <= (row["next_try_at"] - clock()).total_seconds() <= 2 * BASE_BACKOFF

        crm = await receiver(port=port)     # the CRM is back
        clock.at = row["next_try_at"]
        assert await sender.send_due_once() == 1
    finally:
        await sender.close()
    assert len(crm.requests) == 1
    row = await delivery(engine, hook_id)
    assert row["delivered_at"] == clock() and row["tries"] == 2 and row["last_error"] is None


async def test_server_error_is_retried(engine, receiver):
    [hook_id] = await queue(engine)
    crm = await receiver(status=500)
    clock = Clock()
    sender = WebhookSender(engine, crm.url, SECRET, clock=clock)
    try:
        await sender.send_due_once()
        row = await delivery(engine, hook_id)
        assert (row["tries"], row["last_error"], row["delivered_at"]) == (1, "HTTP 500", None)
        crm.status = 202
        clock.at = row["next_try_at"]
        assert await sender.send_due_once() == 1
    finally:
        await sender.close()
    assert len(crm.requests) == 2
    assert crm.requests[0][0]["Idempotency-Key"] == crm.requests[1][0]["Idempotency-Key"]
    assert (await delivery(engine, hook_id))["delivered_at"] == clock()


async def test_redirect_and_client_errors_are_failures(engine, receiver):
    [hook_id] = await queue(engine)
    crm = await receiver(status=404)
    sender = WebhookSender(engine, crm.url, clock=Clock())
    try:
        await sender.send_due_once()
    finally:
        await sender.close()
    assert (await delivery(engine, hook_id))["last_error"] == "HTTP 404"


async def test_timeout_is_a_failure_and_does_not_hold_other_rows(engine, receiver):
    [hook_id] = await queue(engine)
    slow = await receiver(delay=3)
    sender = WebhookSender(engine, slow.url, timeout=0.5, clock=Clock())
    started = asyncio.get_running_loop().time()
    try:
        await sender.send_due_once()
    finally:
        await sender.close()
    assert asyncio.get_running_loop().time() - started < 2.5
    row = await delivery(engine, hook_id)
    assert (row["tries"], row["last_error"]) == (1, "timeout after 0.5s")


async def test_no_database_lock_is_held_during_the_post(engine, receiver):
    """While the receiver is still answering, the row can be updated by anyone (no lock held,
    no transaction open) and another sender finds nothing due (the row is leased)."""
    [hook_id] = await queue(engine)
    crm = await receiver(delay=1.0)
    sender = WebhookSender(engine, crm.url, clock=Clock())
    other = WebhookSender(engine, crm.url, clock=Clock())
    try:
        task = asyncio.create_task(sender.send_due_once())
        while not crm.requests:
            await asyncio.sleep(0.01)
        async with engine.begin() as conn:
            await conn.execute(text("SET LOCAL lock_timeout = '200ms'"))
            await conn.execute(text("SELECT id FROM webhook_deliveries WHERE id = :id FOR UPDATE"), {"id": hook_id})
            idle = (await conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state = 'idle in transaction' AND pid <> pg_backend_pid()"))).scalar()
        assert idle == 0
        assert await other.send_due_once() == 0
        assert await task == 1
    finally:
        await sender.close()
        await other.close()
    assert (await delivery(engine, hook_id))["delivered_at"] is not None


async def test_two_senders_never_post_the_same_row_twice(db_url, engine, receiver):
    ids = await queue(engine, 60)
    crm = await receiver(delay=0.02)
    other_engine = make_async_engine(db_url)
    a = WebhookSender(engine, crm.url, SECRET, clock=Clock(), batch=7)
    b = WebhookSender(other_engine, crm.url, SECRET, clock=Clock(), batch=7)
    counts = {"a": 0, "b": 0}

    async def drain(name, sender):
        while True:
            n = await sender.send_due_once()
            counts[name] += n
            if n == 0:
                return

    try:
        await asyncio.gather(drain("a", a), drain("b", b))
    finally:
        await a.close()
        await b.close()
        await other_engine.dispose()
    keys = [h["Idempotency-Key"] for h, _ in crm.requests]
    assert len(keys) == len(set(keys)) == 60, "a row was POSTed twice"
    assert counts["a"] > 0 and counts["b"] > 0
    for hook_id in ids:
        assert (await delivery(engine, hook_id))["delivered_at"] is not None
    async with engine.connect() as conn:
        assert await queue_counts(conn) == {"delivered": 60, "waiting": 0, "retrying": 0}


async def test_no_url_idles_and_leaves_rows_queued(engine, caplog):
    [hook_id] = await queue(engine)
    sender = WebhookSender(engine, None, clock=Clock(), poll_interval=0.05)
    with caplog.at_level("WARNING", logger="ivr.notify.webhook"):
        assert await sender.send_due_once() == 0
        assert await sender.send_due_once() == 0
        task = asyncio.create_task(sender.run())
        await asyncio.sleep(0.1)
        sender.stop()
        await asyncio.wait_for(task, 2)
    assert sum("webhook_disabled" in r.getMessage() for r in caplog.records) == 1
    row = await delivery(engine, hook_id)
    assert (row["delivered_at"], row["tries"], row["next_try_at"]) == (None, 0, T0)


async def test_run_loop_delivers_and_stops(engine, receiver):
    ids = await queue(engine, 3)
    crm = await receiver()
    sender = WebhookSender(engine, crm.url, SECRET, clock=Clock(), poll_interval=0.05)
    task = asyncio.create_task(sender.run())
    try:
        for _ in range(100):
            if len(crm.requests) == 3:
                break
            await asyncio.sleep(0.05)
    finally:
        sender.stop()
        await asyncio.wait_for(task, 5)
    assert len(crm.requests) == 3
    for hook_id in ids:
        assert (await delivery(engine, hook_id))["delivered_at"] == T0


def test_backoff_doubles_caps_and_jitters():
    assert backoff(0, rand=lambda: 0.0) == 30
    assert backoff(1, rand=lambda: 0.0) == 60
    assert backoff(3, rand=lambda: 0.0) == 240
    assert backoff(20, rand=lambda: 0.0) == 3600
    assert backoff(20, 600, rand=lambda: 0.0) == 600
    assert backoff(1000, rand=lambda: 0.0) == 3600
    assert backoff(0, rand=lambda: 1.0) == 22.5
    assert all(22.5 <= backoff(0) <= 30 for _ in range(100))


def test_cli_shows_the_queue_and_sends(db_url, monkeypatch):
    from click.testing import CliRunner

    from ivr.cli import main
    from models.db import make_engine

    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM notification_jobs"))
        client = conn.execute(text("INSERT INTO clients (full_name) VALUES ('CLI') RETURNING id")).scalar()
        job = conn.execute(text(
            "INSERT INTO notification_jobs (client_id, e164, template, status, result) "
            "VALUES (:c, '+79161234567', 'docs_sent', 'confirmed', 'confirmed') RETURNING id"), {"c": client}).scalar()
        conn.execute(text("INSERT INTO webhook_deliveries (job_id, event, payload, next_try_at) "
                          "VALUES (:j, 'job.final', '{}'::jsonb, now() - interval '1 minute')"), {"j": job})
    engine.dispose()
    monkeypatch.delenv("IVR_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("IVR_WEBHOOK_SECRET", SECRET)
    runner = CliRunner()
    shown = runner.invoke(main, ["notify", "webhooks", "--database-url", db_url])
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[0] == "delivered 0  waiting 1  retrying 0"

    no_url = runner.invoke(main, ["notify", "webhooks", "--send", "--database-url", db_url])
    assert no_url.exit_code == 2 and "IVR_WEBHOOK_URL" in no_url.output

    down = runner.invoke(main, ["notify", "webhooks", "--send", "--url", f"http://127.0.0.1:{free_port()}/h",
                                "--timeout", "2", "--database-url", db_url])
    assert down.exit_code == 0, down.output
    assert down.output.splitlines()[0] == "delivered 0  waiting 0  retrying 1"
    assert "1 tries" in down.output and "connection failed" in down.output and SECRET not in down.output
