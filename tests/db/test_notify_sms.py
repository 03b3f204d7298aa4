"""The SMS channel (ivr.notify.sms_channel) against the real Postgres, the local SMPP server
(ivr.sms.testing_smsc.LocalSmsc) and an HTTP gateway (aiohttp): a claimed SMS job is sent in
UCS2, waits ``sent``, and its receipt makes it ``delivered`` (webhook queued, contact history
written); an undelivered receipt, a rejection and an SMSC that is down reschedule it by the
retry policy inside the call window; duplicate and unknown receipts change nothing; a receipt
that overtakes the ``sent`` commit is still applied.

The clock is fixed on Tuesday 2025-03-11 12:00 Moscow (a working day, inside the window). Jobs
are due then; each test first deletes jobs older than April 2025 (other tests' jobs are due in
the 1960s or now), so a claim at that time sees only this test's job."""

from __future__ import annotations

import asyncio
import secrets
import socket
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text

from ivr.notify.claim import claim_due_jobs, release_stale
from ivr.notify.retry import PolicySet, RetryPolicy
from ivr.notify.sms_channel import SmsChannel, sms_text
from ivr.notify.templates import TemplateStore
from ivr.sms.http_gateway import HttpSmsGateway
from ivr.sms.smpp import DATA_CODING_UCS2, DeliveryReceipt, SmppSender, SmppUnavailable
from ivr.sms.testing_smsc import LocalSmsc
from models.db import make_async_engine
from models.notifications import JobRequest, create_job

pytestmark = pytest.mark.db

NOW = datetime(2025, 3, 11, 9, 0, tzinfo=timezone.utc)          # Tuesday 12:00 Moscow
CUTOFF = datetime(2025, 4, 1, tzinfo=timezone.utc)
TEMPLATE = ("{{ address_name }}, здравствуйте. Компания «{{ company_name }}». {{ sent_date }} мы отправили "
            "вам заказным письмом {{ documents }}.")
SHORT = "{{ address_name }}, документы отправлены."
VARS = {"address_name": "Пётр Николаевич", "sent_date": "07.02", "documents": "бухгалтерские документы за декабрь"}
POLICIES = PolicySet(default=RetryPolicy(), templates={})      # smsc_unavailable 5m, sms_undelivered 1h


@pytest.fixture
async def engine(database_url):
    engine = make_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM notification_jobs WHERE earliest_at < :cutoff"), {"cutoff": CUTOFF})
    yield engine
    await engine.dispose()


@pytest.fixture
def templates(tmp_path):
    (tmp_path / "sms_docs.txt.j2").write_text(TEMPLATE, encoding="utf-8")
    (tmp_path / "sms_short.txt.j2").write_text(SHORT, encoding="utf-8")
    return TemplateStore(tmp_path, company_name="Эни")


def unique_phone() -> str:
    return "+7916" + str(secrets.randbelow(10**7)).zfill(7)


async def claimed_sms_job(engine, templates, template: str = "sms_docs"):
    """A new SMS job due at NOW, claimed: the ClaimedJob."""
    async with engine.begin() as conn:
        job, created = await create_job(conn, JobRequest(template=template, variables=VARS, phone=unique_phone(),
                                                         channel="sms", earliest_at=NOW - timedelta(hours=1)),
                                        templates=templates, now=NOW - timedelta(hours=1))
    assert created
    async with engine.begin() as conn:
        claimed = await claim_due_jobs(conn, worker="sms-test", now=NOW, limit=10)
    [mine] = [c for c in claimed if c.job_id == job.id]
    assert mine.channel == "sms" and mine.attempt_no == 1
    return mine


async def job_of(engine, job_id: int):
    async with engine.connect() as conn:
        return (await conn.execute(text("SELECT * FROM notification_jobs WHERE id = :id"),
                                   {"id": job_id})).mappings().one()


async def attempt_of(engine, attempt_id: int):
    async with engine.connect() as conn:
        return (await conn.execute(text("SELECT * FROM notification_attempts WHERE id = :id"),
                                   {"id": attempt_id})).mappings().one()


async def contacts_of(engine, client_id: int):
    async with engine.connect() as conn:
        return (await conn.execute(text("SELECT * FROM contacts WHERE client_id = :id ORDER BY id"),
                                   {"id": client_id})).mappings().all()


async def webhooks_of(engine, job_id: int):
    async with engine.connect() as conn:
        return (await conn.execute(text("SELECT * FROM webhook_deliveries WHERE job_id = :id"),
                                   {"id": job_id})).mappings().all()


@asynccontextmanager
async def smpp(**smsc_options):
    async with LocalSmsc(**smsc_options) as smsc:
        sender = SmppSender("127.0.0.1", smsc.port, "test", "secret", "Eni", timeout=2.0)
        await sender.connect()
        try:
            yield smsc, sender
        finally:
            await sender.close()


async def next_receipt(driver, timeout: float = 5.0) -> DeliveryReceipt:
    return await asyncio.wait_for(driver.receipts().__anext__(), timeout)


async def wait_for_status(engine, job_id: int, status: str, timeout: float = 5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        row = await job_of(engine, job_id)
        if row["status"] == status or asyncio.get_running_loop().time() > deadline:
            return row
        await asyncio.sleep(0.05)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- SMPP -----------------------------------------------------------------------------------

async def test_sms_sent_in_ucs2_then_delivered_by_its_receipt(engine, templates):
    claimed = await claimed_sms_job(engine, templates)
    async with smpp() as (smsc, sender):
        channel = SmsChannel(engine, sender, POLICIES, clock=lambda: NOW)
        assert await channel.deliver(claimed) is None

        [message] = smsc.messages
        assert message.text == sms_text(claimed.prompt_text) and "Пётр Николаевич" in message.text
        assert "нажмите" not in message.text
        assert message.destination_addr == claimed.e164.lstrip("+")
        assert len(message.text) > 70 and len(message.message_ids) == 2     # concatenated
        assert {s.data_coding for s in smsc.submitted} == {DATA_CODING_UCS2}
        job = await job_of(engine, claimed.job_id)
        attempt = await attempt_of(engine, claimed.attempt_id)
        assert (job["status"], attempt["state"], attempt["sms_message_id"]) == (
            "sent", "sent", message.message_ids[0])

        # one receipt per segment; the first segment's id is the message's
        first, second = await next_receipt(sender), await next_receipt(sender)
        if second.message_id == message.message_ids[0] and first.message_id != second.message_id:
            first, second = second, first
        assert first.message_id == message.message_ids[0] and first.status == "DELIVRD"
        # (SmppSender maps a later segment's receipt to the first id only once send() has
        # returned; a receipt overtaking that carries the segment's own id - see docs/sms.md)
        assert second.message_id in message.message_ids
        finished = await channel.on_receipt(first)
        assert (finished.status, finished.result, finished.already) == ("delivered", "delivered", False)

        job = await job_of(engine, claimed.job_id)
        attempt = await attempt_of(engine, claimed.attempt_id)
        assert (job["status"], job["result"], job["next_attempt_at"], job["claimed_by"]) == (
            "delivered", "delivered", None, None)
        assert (attempt["state"], attempt["cause"], attempt["delivered_at"], attempt["ended_at"]) == (
            "done", "receipt DELIVRD", NOW, NOW)
        [hook] = await webhooks_of(engine, claimed.job_id)
        assert hook["event"] == "job.final" and hook["delivered_at"] is None
        assert (hook["payload"]["status"], hook["payload"]["result"]) == ("delivered", "delivered")
        [contact] = await contacts_of(engine, claimed.client_id)
        assert (contact["direction"], contact["result"], contact["call_uid"]) == (
            "outbound", "robot:delivered", message.message_ids[0])
        assert contact["note"].startswith("SMS, шаблон sms_docs, попытка 1")

        # the second segment's receipt changes nothing: a duplicate for the job, or (with the
        # segment's own id) a message id no attempt has
        again = await channel.on_receipt(second)
        assert again is None or (again.already and again.status == "delivered")
        again = await channel.on_receipt(first)                 # the SMSC repeats a receipt
        assert again.already and again.status == "delivered"
        assert len(await contacts_of(engine, claimed.client_id)) == 1
        assert len(await webhooks_of(engine, claimed.job_id)) == 1
        assert (await attempt_of(engine, claimed.attempt_id))["delivered_at"] == NOW


async def test_undelivered_receipt_reschedules_by_the_policy(engine, templates):
    claimed = await claimed_sms_job(engine, templates, "sms_short")
    async with smpp(receipt_status="UNDELIV") as (smsc, sender):
        channel = SmsChannel(engine, sender, POLICIES, clock=lambda: NOW)
        await channel.deliver(claimed)
        assert len(smsc.messages) == 1 and len(smsc.submitted) == 1
        finished = await channel.on_receipt(await next_receipt(sender))
    assert (finished.status, finished.next_attempt_at) == ("scheduled", NOW + timedelta(hours=1))
    job = await job_of(engine, claimed.job_id)
    attempt = await attempt_of(engine, claimed.attempt_id)
    assert (job["status"], job["result"], job["next_attempt_at"], job["attempts_made"]) == (
        "scheduled", None, NOW + timedelta(hours=1), 1)
    assert (attempt["state"], attempt["cause"], attempt["delivered_at"]) == ("failed", "receipt UNDELIV", None)
    [contact] = await contacts_of(engine, claimed.client_id)
    assert contact["result"] == "robot:sms_undelivered"
    assert await webhooks_of(engine, claimed.job_id) == []

    # the retry is attempt 2, an SMS again
    async with engine.begin() as conn:
        again = await claim_due_jobs(conn, worker="sms-test", now=NOW + timedelta(hours=1), limit=10)
    assert [(c.job_id, c.attempt_no, c.channel) for c in again] == [(claimed.job_id, 2, "sms")]


async def test_smsc_down_fails_the_attempt_and_retries_in_5_minutes(engine, templates):
    claimed = await claimed_sms_job(engine, templates, "sms_short")
    sender = SmppSender("127.0.0.1", closed_port(), "test", "secret", "Eni", timeout=0.3)
    with pytest.raises(SmppUnavailable):
        await sender.connect()
    channel = SmsChannel(engine, sender, POLICIES, clock=lambda: NOW)
    finished = await channel.deliver(claimed)               # does not raise
    assert (finished.status, finished.next_attempt_at) == ("scheduled", NOW + timedelta(minutes=5))
    job = await job_of(engine, claimed.job_id)
    attempt = await attempt_of(engine, claimed.attempt_id)
    assert (job["status"], job["next_attempt_at"]) == ("scheduled", NOW + timedelta(minutes=5))
    assert attempt["state"] == "failed" and attempt["cause"].startswith("smsc_unavailable")
    assert attempt["sms_message_id"] is None
    [contact] = await contacts_of(engine, claimed.client_id)
    assert contact["result"] == "robot:smsc_unavailable"
    await sender.close()


@pytest.mark.parametrize("submit_status,outcome,cause,delay", [
    (0x0B, "sms_undelivered", "rejected ESME_RINVDSTADR (0x0B)", timedelta(hours=1)),
    (0x58, "smsc_unavailable", "smsc_unavailable ESME_RTHROTTLED (0x58)", timedelta(minutes=5)),
])
async def test_submit_rejections(engine, templates, submit_status, outcome, cause, delay):
    claimed = await claimed_sms_job(engine, templates, "sms_short")
    async with smpp(submit_status=submit_status) as (smsc, sender):
        finished = await SmsChannel(engine, sender, POLICIES, clock=lambda: NOW).deliver(claimed)
    assert smsc.messages == []
    assert (finished.status, finished.next_attempt_at) == ("scheduled", NOW + delay)
    attempt = await attempt_of(engine, claimed.attempt_id)
    assert (attempt["state"], attempt["cause"]) == ("failed", cause)
    [contact] = await contacts_of(engine, claimed.client_id)
    assert contact["result"] == f"robot:{outcome}"


async def test_receipt_overtaking_the_sent_commit_is_applied(engine, templates):
    """The SMSC sends the receipt right after submit_sm_resp; here the channel is slow to
    commit ``sent``, so the receipt loop sees an unknown id first and must wait for it."""
    claimed = await claimed_sms_job(engine, templates, "sms_short")
    async with smpp() as (smsc, sender):

        class SlowToReturn:
            async def send(self, e164, body):
                message_id = await sender.send(e164, body)
                await asyncio.sleep(0.5)                    # the receipt is consumed meanwhile
                return message_id

            def receipts(self):
                return sender.receipts()

        channel = SmsChannel(engine, SlowToReturn(), POLICIES, clock=lambda: NOW)
        loop = asyncio.create_task(channel.run_receipts())
        try:
            await channel.deliver(claimed)
            job = await wait_for_status(engine, claimed.job_id, "delivered")
        finally:
            loop.cancel()
    assert (job["status"], job["result"]) == ("delivered", "delivered")


async def test_unknown_and_intermediate_receipts_are_ignored(engine, templates, caplog):
    claimed = await claimed_sms_job(engine, templates, "sms_short")
    async with smpp(receipts=False) as (smsc, sender):
        channel = SmsChannel(engine, sender, POLICIES, clock=lambda: NOW)
        await channel.deliver(claimed)
        [message_id] = smsc.messages[0].message_ids
        caplog.set_level("INFO", logger="ivr.notify.sms")
        assert await channel.on_receipt(DeliveryReceipt(f"nope-{secrets.token_hex(6)}", "DELIVRD", None)) is None
        assert "event=sms_receipt_unknown" in caplog.text
        assert await channel.on_receipt(DeliveryReceipt(message_id, "ENROUTE", None)) is None
    assert (await job_of(engine, claimed.job_id))["status"] == "sent"
    assert (await attempt_of(engine, claimed.attempt_id))["state"] == "sent"

    # a sent attempt has left the SMSC: a dialer restart never releases (re-sends) it
    async with engine.begin() as conn:
        assert await release_stale(conn, older_than=NOW + timedelta(hours=1), live_channel_ids=set()) == 0
    assert (await job_of(engine, claimed.job_id))["status"] == "sent"


async def test_run_receipts_survives_a_bad_receipt(engine, templates):
    claimed = await claimed_sms_job(engine, templates, "sms_short")
    queue: asyncio.Queue = asyncio.Queue()

    class Driver:
        async def send(self, e164, body):
            return f"fake-{claimed.attempt_id}"

        async def receipts(self):
            while True:
                yield await queue.get()

    channel = SmsChannel(engine, Driver(), POLICIES, clock=lambda: NOW)
    await channel.deliver(claimed)
    loop = asyncio.create_task(channel.run_receipts())
    try:
        queue.put_nowait(DeliveryReceipt("x" * 500, None, None))            # garbage: on_receipt fails
        queue.put_nowait(DeliveryReceipt(f"fake-{claimed.attempt_id}", "EXPIRED", None, error="0x0C"))
        job = await wait_for_status(engine, claimed.job_id, "scheduled")
    finally:
        loop.cancel()
    assert job["status"] == "scheduled"
    assert (await attempt_of(engine, claimed.attempt_id))["cause"] == "receipt EXPIRED err:0x0C"


# --- HTTP gateway ---------------------------------------------------------------------------

class FakeHttpGateway:
    def __init__(self):
        self.sent: list[dict] = []
        self.status = 200

    async def send(self, request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer gw-token"
        self.sent.append(await request.json())
        if self.status != 200:
            return web.json_response({"error": "down"}, status=self.status)
        return web.json_response({"result": {"message_id": f"gw-{len(self.sent)}-{secrets.token_hex(4)}"}})


@asynccontextmanager
async def http_gateway():
    fake = FakeHttpGateway()
    app = web.Application()
    app.router.add_post("/send", fake.send)
    async with TestServer(app, host="127.0.0.1") as server:
        gateway = HttpSmsGateway(str(server.make_url("/send")), token="gw-token", sender="Eni",
                                 callback_url="http://ivr.test/sms/receipts?token=cb", callback_secret="cb",
                                 id_field="result.message_id", timeout=2.0)
        callbacks = web.Application()
        gateway.add_callback_route(callbacks)
        async with TestClient(TestServer(callbacks, host="127.0.0.1")) as ivr_http:
            try:
                yield fake, gateway, ivr_http
            finally:
                await gateway.close()


async def test_http_gateway_end_to_end(engine, templates):
    claimed = await claimed_sms_job(engine, templates)
    async with http_gateway() as (fake, gateway, ivr_http):
        channel = SmsChannel(engine, gateway, POLICIES, clock=lambda: NOW)
        loop = asyncio.create_task(channel.run_receipts())
        try:
            assert await channel.deliver(claimed) is None
            [sent] = fake.sent
            assert sent["text"] == sms_text(claimed.prompt_text) and sent["to"] == claimed.e164
            assert sent["callback_url"] == "http://ivr.test/sms/receipts?token=cb"
            attempt = await attempt_of(engine, claimed.attempt_id)
            assert attempt["state"] == "sent" and attempt["sms_message_id"].startswith("gw-1-")
            assert (await job_of(engine, claimed.job_id))["status"] == "sent"

            resp = await ivr_http.post("/sms/receipts?token=cb", json={
                "id": attempt["sms_message_id"], "status": "delivered", "at": "2025-03-11T09:00:30Z"})
            assert resp.status == 204
            job = await wait_for_status(engine, claimed.job_id, "delivered")
            assert (job["status"], job["result"]) == ("delivered", "delivered")
            # the gateway repeats its callback: harmless
            resp = await ivr_http.post("/sms/receipts?token=cb", json={
                "id": attempt["sms_message_id"], "status": "delivered"})
            assert resp.status == 204
            await asyncio.sleep(0.2)
        finally:
            loop.cancel()
    assert (await job_of(engine, claimed.job_id))["status"] == "delivered"
    assert len(await contacts_of(engine, claimed.client_id)) == 1
    assert len(await webhooks_of(engine, claimed.job_id)) == 1
    assert (await attempt_of(engine, claimed.attempt_id))["delivered_at"] == NOW


async def test_http_gateway_down_retries_in_5_minutes(engine, templates):
    claimed = await claimed_sms_job(engine, templates, "sms_short")
    async with http_gateway() as (fake, gateway, _):
        fake.status = 503
        finished = await SmsChannel(engine, gateway, POLICIES, clock=lambda: NOW).deliver(claimed)
    assert (finished.status, finished.next_attempt_at) == ("scheduled", NOW + timedelta(minutes=5))
    attempt = await attempt_of(engine, claimed.attempt_id)
    assert (attempt["state"], attempt["cause"]) == ("failed", "smsc_unavailable gateway http 503")
