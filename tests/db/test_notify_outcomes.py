"""How an attempt ends and what happens to its job (ivr.notify.outcomes.finish_attempt) against
the real Postgres: a job is created (models.notifications.create_job), claimed at a fixed time
inside the call window (ivr.notify.claim.claim_due_jobs: Tuesday 2026-12-01 12:00 Moscow), then
finished with each outcome; the job, its attempt, the client's contact history, the CRM webhook
outbox and the manager tasks are read back.

The module works in its own database (``<IVR_TEST_DB>_outcomes``) and empties the job table
before each test, so a claim at the fixed time sees only that test's job."""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from ivr.notify.claim import CRASH_CAUSE, claim_due_jobs, release_stale
from ivr.notify.outcomes import AttemptResult, finish_attempt, mark_sms_sent, outcome_of_unanswered
from ivr.notify.retry import load_policies, parse_policies
from ivr.notify.templates import TemplateStore
from models.db import make_async_engine
from models.migrate import upgrade
from models.notifications import JobRequest, create_job
from tests.conftest import TEST_DB, drop_database, recreate_database

pytestmark = pytest.mark.db

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=MSK)          # a Tuesday, inside the 10:00-19:00 window
CREATED = NOW - timedelta(hours=2)
TEMPLATE = "{{ address_name }}, здравствуйте. {{ sent_date }} мы отправили вам {{ documents }}. Нажмите 1."
VARS = {"sent_date": "07.02", "documents": "документы за декабрь"}
POLICIES = parse_policies("defaults: {}\n")              # the built-in defaults (busy 15m, no answer 2h, ...)


@pytest.fixture(scope="module")
def db_url(pg_server_url):
    name = f"{TEST_DB}_outcomes"
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


async def new_job(engine, templates, *, max_attempts: int = 5, deadline: datetime | None = None,
                  channel: str = "call", with_operator: bool = True):
    """A client (with his manager) and a pending job for him, due at CREATED."""
    async with engine.begin() as conn:
        operator_id = None
        if with_operator:
            operator_id = (await conn.execute(text(
                "INSERT INTO operators (name, extension) VALUES ('Мария', :ext) RETURNING id"),
                {"ext": str(10_000_000 + secrets.randbelow(89_999_999))})).scalar()
        client_id = (await conn.execute(text(
            "INSERT INTO clients (full_name, address_name, assigned_operator_id) "
            "VALUES ('Иванов Пётр Николаевич', 'Пётр Николаевич', :op) RETURNING id"), {"op": operator_id})).scalar()
        e164 = "+7916" + str(secrets.randbelow(10**7)).zfill(7)
        await conn.execute(text("INSERT INTO client_phones (client_id, e164) VALUES (:c, :e)"),
                           {"c": client_id, "e": e164})
        job, created = await create_job(conn, JobRequest(
            template="docs_sent", variables=VARS, client_id=client_id, channel=channel, max_attempts=max_attempts,
            deadline_at=deadline, external_id=f"crm-{secrets.token_hex(6)}"), templates=templates, now=CREATED)
    assert created
    return job, operator_id


async def claim_one(engine, now: datetime = NOW):
    async with engine.begin() as conn:
        claimed = await claim_due_jobs(conn, worker="dialer-t", now=now, limit=10)
    assert len(claimed) == 1, claimed
    return claimed[0]


async def finish(engine, attempt_id: int, result: AttemptResult, policies=POLICIES, now: datetime | None = None):
    async with engine.begin() as conn:
        return await finish_attempt(conn, attempt_id, result, policies=policies, now=now)


async def one(engine, sql: str, **params):
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).mappings().one()


async def rows(engine, sql: str, **params):
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).mappings().all()


async def job_row(engine, job_id):
    return await one(engine, "SELECT * FROM notification_jobs WHERE id = :id", id=job_id)


async def attempt_row(engine, attempt_id):
    return await one(engine, "SELECT * FROM notification_attempts WHERE id = :id", id=attempt_id)


async def contacts_of(engine, client_id):
    return await rows(engine, "SELECT * FROM contacts WHERE client_id = :c ORDER BY id", c=client_id)


async def webhooks_of(engine, job_id):
    return await rows(engine, "SELECT * FROM webhook_deliveries WHERE job_id = :j", j=job_id)


async def tasks_of(engine, job_id):
    return await rows(engine, "SELECT * FROM manager_tasks WHERE job_id = :j", j=job_id)


def unanswered(outcome: str, cause: int | None, ended: datetime = NOW) -> AttemptResult:
    return AttemptResult(outcome=outcome, cause=f"{outcome} ({cause})", ended_at=ended, hangup_cause=cause)


def answered(outcome: str, digits: str | None = None, ended: datetime = NOW) -> AttemptResult:
    return AttemptResult(outcome=outcome, cause=outcome, ended_at=ended, hangup_cause=16, digits=digits,
                         answered_at=ended - timedelta(seconds=25), prompt_text="Пётр Николаевич, здравствуйте.")


# --- the client acted -------------------------------------------------------------------------

async def test_confirmed_is_final_with_webhook_contact_and_digits(engine, templates):
    job, _ = await new_job(engine, templates)
    claimed = await claim_one(engine, NOW - timedelta(minutes=1))
    done = await finish(engine, claimed.attempt_id, answered("confirmed", digits="1"))
    assert (done.status, done.result, done.next_attempt_at, done.stale, done.already) == (
        "confirmed", "confirmed", None, False, False)

    row = await job_row(engine, job.id)
    assert (row["status"], row["result"], row["next_attempt_at"], row["claimed_by"], row["attempts_made"]) == (
        "confirmed", "confirmed", None, None, 1)
    attempt = await attempt_row(engine, claimed.attempt_id)
    assert (attempt["state"], attempt["cause"], attempt["digits"], attempt["hangup_cause"]) == (
        "done", "confirmed", "1", 16)
    assert attempt["answered_at"] == NOW - timedelta(seconds=25) and attempt["ended_at"] == NOW
    assert attempt["prompt_text"] == "Пётр Николаевич, здравствуйте."

    [contact] = await contacts_of(engine, job.client_id)
    assert (contact["direction"], contact["result"], contact["operator_id"]) == ("outbound", "robot:confirmed", None)
    assert contact["at"] == NOW - timedelta(minutes=1)     # when the attempt started
    assert "попытка 1" in contact["note"] and "нажато 1" in contact["note"]

    [hook] = await webhooks_of(engine, job.id)
    assert (hook["event"], hook["tries"], hook["delivered_at"], hook["next_try_at"]) == ("job.final", 0, None, NOW)
    payload = hook["payload"]
    assert payload["job_id"] == job.id and payload["external_id"] == job.external_id
    assert (payload["status"], payload["result"], payload["phone"], payload["template"]) == (
        "confirmed", "confirmed", job.e164, "docs_sent")
    [a] = payload["attempts"]
    assert (a["attempt_no"], a["channel"], a["state"], a["digits"], a["cause"]) == (1, "call", "done", "1", "confirmed")
    assert datetime.fromisoformat(a["ended_at"]) == NOW
    json.dumps(payload)                                     # plain JSON all the way down
    assert await tasks_of(engine, job.id) == []


async def test_not_received_is_final_and_raises_a_task_for_the_clients_manager(engine, templates):
    job, operator_id = await new_job(engine, templates)
    claimed = await claim_one(engine)
    done = await finish(engine, claimed.attempt_id, answered("not_received", digits="2"))
    assert (done.status, done.result) == ("not_received", "not_received")
    [task] = await tasks_of(engine, job.id)
    assert (task["client_id"], task["operator_id"], task["kind"], task["done_at"]) == (
        job.client_id, operator_id, "not_received", None)
    assert "Пётр Николаевич" in task["body"] and job.e164 in task["body"] and "не получил" in task["body"]
    [hook] = await webhooks_of(engine, job.id)
    assert (hook["payload"]["status"], hook["payload"]["result"]) == ("not_received", "not_received")
    assert (await attempt_row(engine, claimed.attempt_id))["digits"] == "2"


async def test_not_received_without_an_assigned_manager_still_raises_the_task(engine, templates):
    job, _ = await new_job(engine, templates, with_operator=False)
    claimed = await claim_one(engine)
    await finish(engine, claimed.attempt_id, answered("not_received", digits="2"))
    [task] = await tasks_of(engine, job.id)
    assert task["operator_id"] is None and task["kind"] == "not_received"


# --- retries by outcome -----------------------------------------------------------------------

@pytest.mark.parametrize("outcome, cause, attempt_state, expected_local", [
    ("busy", 17, "failed", datetime(2026, 12, 1, 12, 15, tzinfo=MSK)),
    ("no_answer", 19, "failed", datetime(2026, 12, 1, 14, 0, tzinfo=MSK)),
    ("congestion", 34, "failed", datetime(2026, 12, 1, 12, 10, tzinfo=MSK)),
    ("failure", 1, "failed", datetime(2026, 12, 1, 12, 30, tzinfo=MSK)),
])
async def test_unanswered_outcomes_schedule_the_next_attempt(engine, templates, outcome, cause, attempt_state,
                                                             expected_local):
    assert outcome_of_unanswered(cause) == outcome
    job, _ = await new_job(engine, templates)
    claimed = await claim_one(engine)
    done = await finish(engine, claimed.attempt_id, unanswered(outcome, cause))
    assert (done.status, done.result, done.next_attempt_at) == ("scheduled", None, expected_local)
    row = await job_row(engine, job.id)
    assert (row["status"], row["result"], row["next_attempt_at"], row["claimed_by"], row["claimed_at"]) == (
        "scheduled", None, expected_local, None, None)
    assert row["updated_at"] == NOW
    attempt = await attempt_row(engine, claimed.attempt_id)
    assert (attempt["state"], attempt["cause"], attempt["hangup_cause"], attempt["digits"]) == (
        attempt_state, f"{outcome} ({cause})", cause, None)
    [contact] = await contacts_of(engine, job.client_id)
    assert contact["result"] == f"robot:{outcome}"
    assert await webhooks_of(engine, job.id) == [] and await tasks_of(engine, job.id) == []

    # due again at exactly that time, as attempt 2
    async with engine.begin() as conn:
        assert await claim_due_jobs(conn, worker="w", now=expected_local - timedelta(seconds=1), limit=5) == []
    again = await claim_one(engine, expected_local)
    assert (again.job_id, again.attempt_no) == (job.id, 2)


async def test_busy_late_in_the_day_moves_into_the_next_window(engine, templates):
    job, _ = await new_job(engine, templates)
    late = datetime(2026, 12, 1, 18, 50, tzinfo=MSK)
    claimed = await claim_one(engine, late - timedelta(minutes=1))
    done = await finish(engine, claimed.attempt_id, unanswered("busy", 17, ended=late))
    assert done.next_attempt_at == datetime(2026, 12, 2, 10, 0, tzinfo=MSK)
    assert "moved into the call window" in done.reason


async def test_no_action_retries_next_working_day_at_ten_with_result_no_action(engine, templates):
    job, _ = await new_job(engine, templates)
    claimed = await claim_one(engine)
    done = await finish(engine, claimed.attempt_id, answered("no_action", digits="7"))
    wednesday_ten = datetime(2026, 12, 2, 10, 0, tzinfo=MSK)
    assert (done.status, done.result, done.next_attempt_at) == ("scheduled", "no_action", wednesday_ten)
    row = await job_row(engine, job.id)
    assert (row["status"], row["result"], row["next_attempt_at"]) == ("scheduled", "no_action", wednesday_ten)
    attempt = await attempt_row(engine, claimed.attempt_id)
    assert (attempt["state"], attempt["digits"]) == ("done", "7")
    assert await webhooks_of(engine, job.id) == []


async def test_no_action_on_friday_skips_the_weekend(engine, templates):
    job, _ = await new_job(engine, templates)
    friday = datetime(2026, 12, 4, 15, 0, tzinfo=MSK)
    claimed = await claim_one(engine, friday)
    done = await finish(engine, claimed.attempt_id, answered("no_action", ended=friday))
    assert done.next_attempt_at == datetime(2026, 12, 7, 10, 0, tzinfo=MSK)   # Monday


async def test_hangup_during_prompt_is_heard_and_retried(engine, templates):
    job, _ = await new_job(engine, templates)
    claimed = await claim_one(engine)
    done = await finish(engine, claimed.attempt_id, answered("hangup_during_prompt"))
    assert (done.status, done.result, done.next_attempt_at) == (
        "scheduled", None, datetime(2026, 12, 1, 13, 0, tzinfo=MSK))
    attempt = await attempt_row(engine, claimed.attempt_id)
    assert (attempt["state"], attempt["cause"]) == ("done", "hangup_during_prompt")
    assert attempt["answered_at"] is not None


# --- the job ends -----------------------------------------------------------------------------

async def test_barrier_reached_ends_exhausted_with_webhook(engine, templates):
    job, _ = await new_job(engine, templates, max_attempts=2)
    first = await claim_one(engine)
    await finish(engine, first.attempt_id, unanswered("no_answer", 19))
    second = await claim_one(engine, NOW + timedelta(hours=2))
    assert second.attempt_no == 2
    done = await finish(engine, second.attempt_id, unanswered("busy", 17, ended=NOW + timedelta(hours=2, minutes=1)))
    assert (done.status, done.result, done.next_attempt_at) == ("exhausted", "exhausted", None)
    assert "2 of 2" in done.reason
    row = await job_row(engine, job.id)
    assert (row["status"], row["result"], row["attempts_made"]) == ("exhausted", "exhausted", 2)
    [hook] = await webhooks_of(engine, job.id)
    assert hook["payload"]["status"] == "exhausted"
    assert [a["cause"] for a in hook["payload"]["attempts"]] == ["no_answer (19)", "busy (17)"]
    assert len(await contacts_of(engine, job.client_id)) == 2
    async with engine.begin() as conn:   # never dialled again
        assert await claim_due_jobs(conn, worker="w", now=NOW + timedelta(days=3), limit=5) == []


async def test_next_slot_after_the_deadline_expires_the_job(engine, templates):
    job, _ = await new_job(engine, templates, deadline=NOW + timedelta(minutes=30))
    claimed = await claim_one(engine)
    done = await finish(engine, claimed.attempt_id, unanswered("no_answer", 19))
    assert (done.status, done.result, done.next_attempt_at) == ("expired", "expired", None)
    assert "after the deadline" in done.reason
    [hook] = await webhooks_of(engine, job.id)
    assert (hook["payload"]["status"], hook["payload"]["result"]) == ("expired", "expired")


async def test_sms_after_calls_switches_the_job_to_sms_then_delivered(engine, templates):
    policies = parse_policies("defaults:\n  sms_after_calls: true\n  sms_attempts: 2\n")
    job, _ = await new_job(engine, templates, max_attempts=1)
    call = await claim_one(engine)
    assert call.channel == "call"
    done = await finish(engine, call.attempt_id, unanswered("no_answer", 19), policies=policies)
    assert (done.status, done.result, done.next_attempt_at) == ("scheduled", None, NOW)
    assert "switching to SMS (2 attempts)" in done.reason
    row = await job_row(engine, job.id)
    assert (row["channel"], row["max_attempts"], row["attempts_made"]) == ("sms", 3, 1)
    assert await webhooks_of(engine, job.id) == []

    sms = await claim_one(engine, NOW + timedelta(seconds=1))
    assert (sms.job_id, sms.attempt_no, sms.channel) == (job.id, 2, "sms")
    async with engine.begin() as conn:
        assert await mark_sms_sent(conn, sms.attempt_id, "msg-42", now=NOW + timedelta(seconds=2)) == "sent"
    receipt_at = NOW + timedelta(seconds=30)
    done = await finish(engine, sms.attempt_id, AttemptResult(outcome="delivered", cause="DELIVRD",
                                                              ended_at=receipt_at), policies=policies)
    assert (done.status, done.result) == ("delivered", "delivered")
    attempt = await attempt_row(engine, sms.attempt_id)
    assert (attempt["state"], attempt["delivered_at"], attempt["sms_message_id"]) == ("done", receipt_at, "msg-42")
    [hook] = await webhooks_of(engine, job.id)
    assert [a["channel"] for a in hook["payload"]["attempts"]] == ["call", "sms"]
    contacts = await contacts_of(engine, job.client_id)
    assert [c["result"] for c in contacts] == ["robot:no_answer", "robot:delivered"]
    assert contacts[1]["call_uid"] == "msg-42" and contacts[1]["note"].startswith("SMS")


async def test_sms_after_calls_does_not_apply_to_a_client_action(engine, templates):
    policies = parse_policies("defaults:\n  sms_after_calls: true\n")
    job, _ = await new_job(engine, templates, max_attempts=1)
    claimed = await claim_one(engine)
    done = await finish(engine, claimed.attempt_id, answered("confirmed", digits="1"), policies=policies)
    assert done.status == "confirmed"
    assert (await job_row(engine, job.id))["channel"] == "call"


async def test_template_policy_override_is_used(engine, templates):
    policies = parse_policies("templates:\n  docs_sent:\n    delays:\n      busy: 40m\n")
    job, _ = await new_job(engine, templates)
    claimed = await claim_one(engine)
    done = await finish(engine, claimed.attempt_id, unanswered("busy", 17), policies=policies)
    assert done.next_attempt_at == NOW + timedelta(minutes=40)


async def test_shipped_policy_file_loads_and_schedules(engine, templates):
    job, _ = await new_job(engine, templates)
    claimed = await claim_one(engine)
    done = await finish(engine, claimed.attempt_id, unanswered("busy", 17), policies=load_policies())
    assert done.next_attempt_at == NOW + timedelta(minutes=15)


# --- duplicates and stale attempts ------------------------------------------------------------

async def test_duplicate_finish_changes_nothing(engine, templates):
    job, _ = await new_job(engine, templates)
    claimed = await claim_one(engine)
    first = await finish(engine, claimed.attempt_id, answered("confirmed", digits="1"))
    before = (await job_row(engine, job.id), await attempt_row(engine, claimed.attempt_id))
    again = await finish(engine, claimed.attempt_id, unanswered("busy", 17, ended=NOW + timedelta(minutes=5)))
    assert again.already and not again.stale
    assert (again.status, again.result, again.job_id) == (first.status, first.result, job.id)
    assert (await job_row(engine, job.id), await attempt_row(engine, claimed.attempt_id)) == before
    assert len(await contacts_of(engine, job.client_id)) == 1
    assert len(await webhooks_of(engine, job.id)) == 1


async def test_stale_attempt_is_recorded_but_leaves_the_job_alone(engine, templates):
    """The job was moved on while the call was still reported (another path released it):
    the attempt and the contact are written, the job is not."""
    job, _ = await new_job(engine, templates)
    claimed = await claim_one(engine)
    released_at = NOW + timedelta(minutes=3)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE notification_jobs SET status = 'scheduled', next_attempt_at = :at, "
                                "claimed_by = NULL WHERE id = :id"), {"at": released_at, "id": job.id})
    before = await job_row(engine, job.id)
    done = await finish(engine, claimed.attempt_id, answered("confirmed", digits="1"))
    assert done.stale and not done.already
    assert (done.status, done.next_attempt_at) == ("scheduled", released_at)
    assert await job_row(engine, job.id) == before
    attempt = await attempt_row(engine, claimed.attempt_id)
    assert (attempt["state"], attempt["digits"]) == ("done", "1")
    assert [c["result"] for c in await contacts_of(engine, job.client_id)] == ["robot:confirmed"]
    assert await webhooks_of(engine, job.id) == [] and await tasks_of(engine, job.id) == []


async def test_attempt_of_a_job_claimed_again_is_stale(engine, templates):
    """Attempt 1 is still open (e.g. answered) while the job is already on attempt 2."""
    job, _ = await new_job(engine, templates)
    first = await claim_one(engine)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE notification_attempts SET state = 'answered' WHERE id = :id"),
                           {"id": first.attempt_id})
        await conn.execute(text("UPDATE notification_jobs SET status = 'scheduled', next_attempt_at = :at "
                                "WHERE id = :id"), {"at": NOW, "id": job.id})
    second = await claim_one(engine, NOW + timedelta(minutes=1))
    assert second.attempt_no == 2
    done = await finish(engine, first.attempt_id, answered("no_action"))
    assert done.stale
    row = await job_row(engine, job.id)
    assert (row["status"], row["attempts_made"], row["claimed_by"]) == ("dialing", 2, "dialer-t")
    # the current attempt still finishes normally
    done = await finish(engine, second.attempt_id, answered("confirmed", digits="1"))
    assert (done.status, done.stale) == ("confirmed", False)


async def test_released_attempt_reported_late_is_already_finished(engine, templates):
    """release_stale failed the attempt (dialer crashed, channel gone); a late report of it
    changes nothing: the job stays released for attempt 2."""
    job, _ = await new_job(engine, templates)
    claimed = await claim_one(engine)
    async with engine.begin() as conn:
        assert await release_stale(conn, older_than=NOW + timedelta(minutes=5), live_channel_ids=set(),
                                   now=NOW + timedelta(minutes=5)) == 1
    before = await job_row(engine, job.id)
    done = await finish(engine, claimed.attempt_id, answered("confirmed", digits="1"))
    assert done.already
    assert await job_row(engine, job.id) == before
    assert (await attempt_row(engine, claimed.attempt_id))["cause"] == CRASH_CAUSE
    assert await contacts_of(engine, job.client_id) == []


async def test_unknown_attempt_and_bad_results_are_errors(engine):
    async with engine.begin() as conn:
        with pytest.raises(LookupError):
            await finish_attempt(conn, 987654321, unanswered("busy", 17), policies=POLICIES)
    with pytest.raises(ValueError):
        AttemptResult(outcome="pressed_9", cause="x", ended_at=NOW)
    with pytest.raises(ValueError):
        AttemptResult(outcome="busy", cause="x", ended_at=NOW.replace(tzinfo=None))


async def test_everything_rolls_back_with_the_callers_transaction(engine, templates):
    job, _ = await new_job(engine, templates)
    claimed = await claim_one(engine)

    class Crash(Exception):
        pass

    with pytest.raises(Crash):
        async with engine.begin() as conn:
            await finish_attempt(conn, claimed.attempt_id, answered("not_received", digits="2"), policies=POLICIES)
            raise Crash
    row = await job_row(engine, job.id)
    assert (row["status"], row["result"]) == ("dialing", None)
    assert (await attempt_row(engine, claimed.attempt_id))["state"] == "dialing"
    assert await contacts_of(engine, job.client_id) == []
    assert await webhooks_of(engine, job.id) == [] and await tasks_of(engine, job.id) == []
    done = await finish(engine, claimed.attempt_id, answered("not_received", digits="2"))
    assert done.status == "not_received" and len(await tasks_of(engine, job.id)) == 1


# --- edge cases: SMS switch after the deadline, a receipt overtaking mark_sms_sent --------------

async def test_sms_switch_past_the_deadline_ends_exhausted(engine, templates):
    policies = parse_policies("defaults:\n  sms_after_calls: true\n")
    job, _ = await new_job(engine, templates, max_attempts=1, deadline=datetime(2026, 12, 1, 19, 30, tzinfo=MSK))
    claimed = await claim_one(engine, datetime(2026, 12, 1, 18, 59, tzinfo=MSK))
    done = await finish(engine, claimed.attempt_id, unanswered("no_answer", 19,
                                                               ended=datetime(2026, 12, 1, 19, 5, tzinfo=MSK)),
                        policies=policies)
    # the SMS slot (next morning 10:00) is after the deadline (19:30 today)
    assert (done.status, done.result) == ("exhausted", "exhausted")   # no SMS: it could not go in time
    assert len(await webhooks_of(engine, job.id)) == 1


async def test_receipt_that_overtakes_mark_sms_sent_is_delivered(engine, templates):
    job, _ = await new_job(engine, templates, channel="sms")
    claimed = await claim_one(engine)
    assert claimed.channel == "sms"
    done = await finish(engine, claimed.attempt_id, AttemptResult(outcome="delivered", cause="DELIVRD",
                                                                  ended_at=NOW + timedelta(seconds=5)))
    assert (done.status, done.result) == ("delivered", "delivered")
