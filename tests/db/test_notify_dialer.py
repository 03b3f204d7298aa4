"""The dialer's checks and housekeeping (ivr.notify.dialer.Dialer) against the real Postgres.

Jobs are created (models.notifications.create_job), claimed at fixed times
(ivr.notify.claim.claim_due_jobs) and checked by ``Dialer._check`` in the claim's transaction,
as ``Dialer.tick`` does; nothing here dials: no synthesizer, and the ARI client points at a
closed port (so ``reconcile`` must log and skip). The fixed "now" is Tuesday 2026-12-01 12:00
Moscow (inside the 10:00-19:00 window).

Covered: a do-not-call number fails the job (attempt row gone, webhook queued with the reason);
a closed call window (Vladivostok at 12:00 Moscow) puts the job back at the next 10:00 local
with ``attempts_made`` undone; the per-client interval defers to last contact + interval; two
jobs of one client in one batch -> one is worked; an SMS job without an SMS channel waits 10
minutes; call attempts get the channel id ``robot-<attempt id>``; ``sweep`` expires a job past
its deadline (webhook queued) and skips reconcile when Asterisk is unreachable;
``release_stale`` with ``claimed_by`` (own at once, others' only when old, live channels kept).

The module works in its own database (``<IVR_TEST_DB>_dialer``) and empties the job table before
each test, so a claim sees only that test's jobs.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from ivr.ari import AriClient, CallDispatcher
from ivr.notify.claim import CRASH_CAUSE, claim_due_jobs, release_stale
from ivr.notify.dialer import Dialer, DialerLimits
from ivr.notify.outcomes import AttemptResult, finish_attempt
from ivr.notify.retry import parse_policies
from ivr.notify.robot_call import RobotTimings
from ivr.notify.templates import TemplateStore
from models.db import make_async_engine
from models.migrate import upgrade
from models.notifications import JobRequest, add_do_not_call, create_job
from tests.conftest import TEST_DB, drop_database, recreate_database

pytestmark = pytest.mark.db

MSK = ZoneInfo("Europe/Moscow")
VLAD = ZoneInfo("Asia/Vladivostok")
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=MSK)          # Tuesday, inside the window
CREATED = NOW - timedelta(hours=2)
TEMPLATE = "{{ address_name }}, здравствуйте. {{ sent_date }} мы отправили вам {{ documents }}. Нажмите 1."
VARS = {"sent_date": "07.02", "documents": "документы за декабрь"}
POLICIES = parse_policies("defaults: {}\n")
INTERVAL = 600.0
TIMINGS = RobotTimings()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def db_url(pg_server_url):
    name = f"{TEST_DB}_dialer"
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


@pytest.fixture
def templates(tmp_path):
    (tmp_path / "docs_sent.txt.j2").write_text(TEMPLATE, encoding="utf-8")
    return TemplateStore(tmp_path, company_name="Эни")


@pytest.fixture
async def ari():
    client = AriClient(f"http://127.0.0.1:{_closed_port()}", "robot", "secret", request_timeout=2.0)
    yield client
    await client.close()


@pytest.fixture
def make_dialer(engine, ari):
    def make(*, worker: str = "dialer-t", sms=None, clock=lambda: NOW) -> Dialer:
        return Dialer(engine=engine, ari=ari, dispatcher=CallDispatcher("test-robot", _no_flow), app="test-robot",
                      synthesizer=None, policies=POLICIES, worker=worker, trunk="carrier", caller_id="74951234567",
                      language="ru", limits=DialerLimits(client_interval_s=INTERVAL), timings=TIMINGS, sms=sms,
                      clock=clock)
    return make


async def _no_flow(session, first_event):  # pragma: no cover - nothing is dialled here
    raise AssertionError("no call expected")


async def new_client(engine, *, tz: str | None = None) -> tuple[int, str]:
    async with engine.begin() as conn:
        client_id = (await conn.execute(text(
            "INSERT INTO clients (full_name, address_name, timezone) "
            "VALUES ('Иванов Пётр Николаевич', 'Пётр Николаевич', :tz) RETURNING id"), {"tz": tz})).scalar()
        e164 = "+7916" + str(secrets.randbelow(10**7)).zfill(7)
        await conn.execute(text("INSERT INTO client_phones (client_id, e164) VALUES (:c, :e)"),
                           {"c": client_id, "e": e164})
    return client_id, e164


async def new_job(engine, templates, client_id: int, *, channel: str = "call", created: datetime = CREATED,
                  deadline: datetime | None = None):
    async with engine.begin() as conn:
        job, created_ = await create_job(conn, JobRequest(
            template="docs_sent", variables=VARS, client_id=client_id, channel=channel, max_attempts=5,
            deadline_at=deadline, external_id=f"crm-{secrets.token_hex(6)}"), templates=templates, now=created)
    assert created_
    return job


async def claim_and_check(engine, dialer: Dialer, now: datetime = NOW):
    """One tick's first half: claim and check in one transaction; (claimed, workable)."""
    async with engine.begin() as conn:
        claimed = await claim_due_jobs(conn, worker=dialer.worker, now=now, limit=10)
        workable = await dialer._check(conn, claimed, now)
    return claimed, workable


async def one(engine, sql: str, **params):
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).mappings().one()


async def rows(engine, sql: str, **params):
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).mappings().all()


async def job_row(engine, job_id):
    return await one(engine, "SELECT * FROM notification_jobs WHERE id = :id", id=job_id)


async def attempts_of(engine, job_id):
    return await rows(engine, "SELECT * FROM notification_attempts WHERE job_id = :j ORDER BY attempt_no", j=job_id)


async def webhooks_of(engine, job_id):
    return await rows(engine, "SELECT * FROM webhook_deliveries WHERE job_id = :j", j=job_id)


def _payload(row) -> dict:
    p = row["payload"]
    return json.loads(p) if isinstance(p, str) else p


def assert_put_back(job, at: datetime):
    assert job["status"] == "scheduled", dict(job)
    assert job["attempts_made"] == 0 and job["claimed_by"] is None and job["claimed_at"] is None
    assert job["next_attempt_at"] == at, (job["next_attempt_at"], at)


# --- _check ------------------------------------------------------------------------------------

async def test_do_not_call_number_fails_the_job_without_an_attempt(engine, templates, make_dialer):
    client_id, e164 = await new_client(engine)
    job = await new_job(engine, templates, client_id)
    async with engine.begin() as conn:              # listed after the job was created
        await add_do_not_call(conn, e164, "просил не звонить")
    claimed, workable = await claim_and_check(engine, make_dialer())
    assert [c.job_id for c in claimed] == [job.id] and workable == []
    row = await job_row(engine, job.id)
    assert row["status"] == "failed" and row["result"] == "failed"
    assert row["attempts_made"] == 0 and row["next_attempt_at"] is None and row["claimed_by"] is None
    assert await attempts_of(engine, job.id) == []
    [hook] = await webhooks_of(engine, job.id)
    payload = _payload(hook)
    assert hook["event"] == "job.final"
    assert payload["reason"] == "do_not_call" and payload["status"] == "failed" and payload["phone"] == e164
    assert payload["external_id"] == job.external_id


async def test_window_closed_in_vladivostok_goes_back_to_the_next_10_local(engine, templates, make_dialer):
    # 12:00 Moscow = 19:00 Vladivostok: the window (10:00-19:00, end exclusive) has just closed.
    client_id, _ = await new_client(engine, tz="Asia/Vladivostok")
    job = await new_job(engine, templates, client_id)
    claimed, workable = await claim_and_check(engine, make_dialer())
    assert len(claimed) == 1 and workable == []
    row = await job_row(engine, job.id)
    assert_put_back(row, datetime(2026, 12, 2, 10, 0, tzinfo=VLAD))     # Wednesday 10:00 local
    assert await attempts_of(engine, job.id) == []
    assert await webhooks_of(engine, job.id) == []


async def test_window_open_in_moscow_is_worked_and_gets_its_channel_id(engine, templates, make_dialer):
    client_id, _ = await new_client(engine, tz="Europe/Moscow")
    job = await new_job(engine, templates, client_id)
    claimed, workable = await claim_and_check(engine, make_dialer())
    assert [w.job_id for w in workable] == [job.id]
    [attempt] = await attempts_of(engine, job.id)
    assert attempt["id"] == workable[0].attempt_id and attempt["state"] == "dialing"
    assert attempt["channel"] == "call" and attempt["channel_id"] == f"robot-{attempt['id']}"
    row = await job_row(engine, job.id)
    assert row["status"] == "dialing" and row["attempts_made"] == 1 and row["claimed_by"] == "dialer-t"


async def test_client_contacted_5_minutes_ago_is_deferred_to_the_interval(engine, templates, make_dialer):
    client_id, _ = await new_client(engine, tz="Europe/Moscow")
    first = await new_job(engine, templates, client_id)
    earlier = NOW - timedelta(minutes=5)
    _, [worked] = await claim_and_check(engine, make_dialer(), earlier)
    async with engine.begin() as conn:               # he was busy: retried in 15 minutes, not due now
        await finish_attempt(conn, worked.attempt_id, AttemptResult("busy", "busy (17)", earlier, hangup_cause=17),
                             policies=POLICIES, now=earlier)
    second = await new_job(engine, templates, client_id)
    claimed, workable = await claim_and_check(engine, make_dialer())
    assert [c.job_id for c in claimed] == [second.id] and workable == []
    assert_put_back(await job_row(engine, second.id), earlier + timedelta(seconds=INTERVAL))
    assert await attempts_of(engine, second.id) == []
    assert len(await attempts_of(engine, first.id)) == 1


async def test_client_contacted_long_ago_is_worked(engine, templates, make_dialer):
    client_id, _ = await new_client(engine, tz="Europe/Moscow")
    await new_job(engine, templates, client_id)
    earlier = NOW - timedelta(minutes=11)
    _, [worked] = await claim_and_check(engine, make_dialer(), earlier)
    async with engine.begin() as conn:
        await finish_attempt(conn, worked.attempt_id, AttemptResult("busy", "busy (17)", earlier, hangup_cause=17),
                             policies=POLICIES, now=earlier)
    second = await new_job(engine, templates, client_id)
    _, workable = await claim_and_check(engine, make_dialer())
    assert [w.job_id for w in workable] == [second.id]


async def test_two_jobs_of_one_client_in_one_batch_only_one_is_worked(engine, templates, make_dialer):
    client_id, _ = await new_client(engine, tz="Europe/Moscow")
    a = await new_job(engine, templates, client_id)
    b = await new_job(engine, templates, client_id)
    other_client, _ = await new_client(engine, tz="Europe/Moscow")
    c = await new_job(engine, templates, other_client)
    claimed, workable = await claim_and_check(engine, make_dialer())
    assert {x.job_id for x in claimed} == {a.id, b.id, c.id}
    worked = {w.job_id for w in workable}
    assert c.id in worked and len(worked & {a.id, b.id}) == 1
    [deferred] = {a.id, b.id} - worked
    assert_put_back(await job_row(engine, deferred), NOW + timedelta(seconds=INTERVAL))
    assert await attempts_of(engine, deferred) == []
    for job_id in worked:
        [attempt] = await attempts_of(engine, job_id)
        assert attempt["channel_id"] == f"robot-{attempt['id']}"


async def test_sms_job_without_an_sms_channel_waits_10_minutes(engine, templates, make_dialer):
    client_id, _ = await new_client(engine, tz="Europe/Moscow")
    job = await new_job(engine, templates, client_id, channel="sms")
    call_client, _ = await new_client(engine, tz="Europe/Moscow")
    call = await new_job(engine, templates, call_client)
    claimed, workable = await claim_and_check(engine, make_dialer(sms=None))
    assert {c.job_id: c.channel for c in claimed} == {job.id: "sms", call.id: "call"}
    assert [w.job_id for w in workable] == [call.id]
    assert_put_back(await job_row(engine, job.id), NOW + timedelta(minutes=10))
    assert await attempts_of(engine, job.id) == []


async def test_sms_job_with_an_sms_channel_is_worked_without_a_channel_id(engine, templates, make_dialer):
    client_id, _ = await new_client(engine, tz="Europe/Moscow")
    job = await new_job(engine, templates, client_id, channel="sms")
    _, workable = await claim_and_check(engine, make_dialer(sms=object()))
    assert [(w.job_id, w.channel) for w in workable] == [(job.id, "sms")]
    [attempt] = await attempts_of(engine, job.id)
    assert attempt["channel"] == "sms" and attempt["channel_id"] is None


async def test_tick_puts_back_without_starting_anything(engine, templates, make_dialer):
    """The whole tick (claim + check + commit) when nothing is workable: no task started."""
    client_id, _ = await new_client(engine, tz="Asia/Vladivostok")
    job = await new_job(engine, templates, client_id)
    dialer = make_dialer()
    assert await dialer.tick() == 0
    assert dialer.active_calls == 0
    assert_put_back(await job_row(engine, job.id), datetime(2026, 12, 2, 10, 0, tzinfo=VLAD))
    assert await dialer.tick() == 0                 # nothing due any more


# --- sweep: expiry and reconcile ---------------------------------------------------------------

async def test_sweep_expires_a_job_past_its_deadline_and_queues_the_webhook(engine, templates, make_dialer, caplog):
    client_id, _ = await new_client(engine, tz="Europe/Moscow")
    late = await new_job(engine, templates, client_id, deadline=NOW - timedelta(minutes=1))
    fine = await new_job(engine, templates, client_id, deadline=NOW + timedelta(days=1))
    caplog.set_level(logging.INFO, logger="ivr.notify.dialer")
    await make_dialer().sweep()
    row = await job_row(engine, late.id)
    assert row["status"] == "expired" and row["result"] == "expired" and row["next_attempt_at"] is None
    [hook] = await webhooks_of(engine, late.id)
    payload = _payload(hook)
    assert hook["event"] == "job.final" and hook["next_try_at"] == NOW
    assert payload["status"] == "expired" and payload["external_id"] == late.external_id
    assert payload["attempts_made"] == 0
    assert (await job_row(engine, fine.id))["status"] == "pending"
    assert await webhooks_of(engine, fine.id) == []
    assert "event=jobs_expired count=1" in caplog.text
    assert "event=reconcile_skipped" in caplog.text           # Asterisk unreachable: logged, skipped
    await make_dialer().sweep()                                 # a second sweep changes nothing
    assert len(await webhooks_of(engine, late.id)) == 1


async def test_reconcile_with_asterisk_unreachable_logs_and_keeps_the_attempt(engine, templates, make_dialer, caplog):
    client_id, _ = await new_client(engine, tz="Europe/Moscow")
    job = await new_job(engine, templates, client_id)
    dialer = make_dialer(clock=lambda: NOW + timedelta(hours=1))
    await claim_and_check(engine, dialer)
    caplog.set_level(logging.WARNING, logger="ivr.notify.dialer")
    assert await dialer.reconcile(own_only=True) == 0
    assert await dialer.reconcile(own_only=False) == 0
    assert caplog.text.count("event=reconcile_skipped") == 2
    [attempt] = await attempts_of(engine, job.id)
    assert attempt["state"] == "dialing"
    assert (await job_row(engine, job.id))["status"] == "dialing"


async def test_release_stale_own_at_once_others_only_when_old(engine, templates, make_dialer):
    jobs = {}
    for worker, started in (("dialer-a", NOW - timedelta(minutes=1)),      # ours, recent
                            ("dialer-b", NOW - timedelta(hours=1)),        # a dead dialer's, old
                            ("dialer-c", NOW - timedelta(minutes=1)),      # another dialer's, recent
                            ("dialer-d", NOW - timedelta(hours=1))):       # old, but its channel is up
        client_id, _ = await new_client(engine, tz="Europe/Moscow")
        job = await new_job(engine, templates, client_id)
        _, [worked] = await claim_and_check(engine, make_dialer(worker=worker), started)
        jobs[worker] = (job.id, worked.attempt_id)
    live = {f"robot-{jobs['dialer-d'][1]}"}

    async with engine.begin() as conn:          # dialer-a restarting: its own, whatever their age
        assert await release_stale(conn, older_than=NOW, live_channel_ids=live, now=NOW,
                                   claimed_by="dialer-a") == 1
    a_job = await job_row(engine, jobs["dialer-a"][0])
    assert a_job["status"] == "scheduled" and a_job["next_attempt_at"] == NOW and a_job["claimed_by"] is None
    assert a_job["attempts_made"] == 1            # the next claim is attempt 2, never a second 1
    [a_attempt] = await attempts_of(engine, jobs["dialer-a"][0])
    assert a_attempt["state"] == "failed" and a_attempt["cause"] == CRASH_CAUSE and a_attempt["ended_at"] == NOW
    for worker in ("dialer-b", "dialer-c", "dialer-d"):
        assert (await job_row(engine, jobs[worker][0]))["status"] == "dialing", worker

    # others' only when older than any call can last (what Dialer.reconcile(own_only=False) uses)
    older_than = NOW - timedelta(seconds=TIMINGS.ring_timeout + TIMINGS.total_timeout + 300)
    async with engine.begin() as conn:
        assert await release_stale(conn, older_than=older_than, live_channel_ids=live, now=NOW) == 1
    assert (await job_row(engine, jobs["dialer-b"][0]))["status"] == "scheduled"
    assert (await job_row(engine, jobs["dialer-c"][0]))["status"] == "dialing"     # too recent
    assert (await job_row(engine, jobs["dialer-d"][0]))["status"] == "dialing"     # its call is up
    [b_attempt] = await attempts_of(engine, jobs["dialer-b"][0])
    assert b_attempt["cause"] == CRASH_CAUSE

    # the released job is claimed again as attempt 2
    async with engine.begin() as conn:
        again = await claim_due_jobs(conn, worker="dialer-a", now=NOW + timedelta(seconds=1), limit=10)
    assert [(c.job_id, c.attempt_no) for c in again if c.job_id == jobs["dialer-a"][0]] == [(jobs["dialer-a"][0], 2)]
