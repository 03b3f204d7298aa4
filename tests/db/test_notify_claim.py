"""Dialers claiming due notification jobs (ivr.notify.claim) against the real Postgres: due time
and limit, two concurrent claimers never taking the same job, the attempt row committed with the
claim, a rolled-back claim leaving the job claimable, reconciliation of a crashed dialer's
attempts, and jobs that must never be claimed.

The jobs here are due in the 1960s (other tests' jobs are due now), and each test first deletes
the previous ones, so a claim at a 1960s ``now`` sees only this test's jobs."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from ivr.notify.claim import CRASH_CAUSE, claim_due_jobs, release_stale
from ivr.notify.jobs import FINAL_STATES
from models.db import make_async_engine

pytestmark = pytest.mark.db

BASE = datetime(1960, 1, 1, 9, 0, tzinfo=timezone.utc)
CUTOFF = datetime(1970, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
async def engine(database_url):
    engine = make_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM notification_jobs WHERE earliest_at < :cutoff"), {"cutoff": CUTOFF})
    yield engine
    await engine.dispose()


async def make_client(conn, notify_channel: str = "call") -> int:
    return (await conn.execute(text(
        "INSERT INTO clients (full_name, notify_channel) VALUES ('Claim Test', :ch) RETURNING id"),
        {"ch": notify_channel})).scalar()


async def make_jobs(engine, n: int, at: datetime, *, status: str = "pending", channel: str = "preference",
                    notify_channel: str = "call", **extra) -> list[int]:
    cols = {"deadline_at": None, "attempts_made": 0, "max_attempts": 5, **extra}
    async with engine.begin() as conn:
        client = await make_client(conn, notify_channel)
        rows = await conn.execute(text(
            "INSERT INTO notification_jobs (client_id, e164, template, channel, status, earliest_at, "
            "next_attempt_at, prompt_text, deadline_at, attempts_made, max_attempts) "
            "SELECT :client, '+79161234567', 'docs_sent', :channel, :status, :at, :at, 'Здравствуйте', "
            ":deadline_at, :attempts_made, :max_attempts FROM generate_series(1, :n) RETURNING id"),
            {"client": client, "channel": channel, "status": status, "at": at, "n": n, **cols})
        return sorted(r[0] for r in rows)


async def claim(engine, *, now: datetime, limit: int = 100, worker: str = "dialer-a"):
    async with engine.begin() as conn:
        return await claim_due_jobs(conn, worker=worker, now=now, limit=limit)


async def job_row(engine, job_id: int):
    async with engine.connect() as conn:
        return (await conn.execute(text("SELECT * FROM notification_jobs WHERE id = :id"), {"id": job_id})).mappings().one()


async def attempts_of(engine, job_id: int):
    async with engine.connect() as conn:
        return (await conn.execute(text("SELECT * FROM notification_attempts WHERE job_id = :id ORDER BY attempt_no"),
                                   {"id": job_id})).mappings().all()


async def test_claim_respects_due_time_and_limit(engine):
    early = await make_jobs(engine, 5, BASE)
    late = await make_jobs(engine, 3, BASE + timedelta(hours=1))
    now = BASE + timedelta(minutes=1)

    first = await claim(engine, now=now, limit=3)
    assert len(first) == 3
    second = await claim(engine, now=now, limit=10)
    assert sorted(j.job_id for j in first + second) == early
    assert await claim(engine, now=now, limit=10) == []

    later = await claim(engine, now=BASE + timedelta(hours=2), limit=10, worker="dialer-b")
    assert sorted(j.job_id for j in later) == late
    row = await job_row(engine, late[0])
    assert (row["status"], row["attempts_made"], row["claimed_by"]) == ("dialing", 1, "dialer-b")
    assert row["claimed_at"] == BASE + timedelta(hours=2)
    assert row["next_attempt_at"] is None


async def test_claim_validates_arguments(engine):
    async with engine.begin() as conn:
        with pytest.raises(ValueError):
            await claim_due_jobs(conn, worker="a", now=BASE, limit=0)
        with pytest.raises(ValueError):
            await claim_due_jobs(conn, worker="a", now=BASE.replace(tzinfo=None), limit=1)
        with pytest.raises(ValueError):
            await claim_due_jobs(conn, worker="", now=BASE, limit=1)


async def test_two_concurrent_claimers_never_share_a_job(database_url, engine):
    due = await make_jobs(engine, 3000, BASE)
    await make_jobs(engine, 50, BASE + timedelta(days=1))  # not due
    other = make_async_engine(database_url)
    now = BASE + timedelta(minutes=5)
    got: dict[str, list[int]] = {"a": [], "b": []}

    async def claimer(eng, name):
        async with eng.begin() as conn:
            jobs = await claim_due_jobs(conn, worker=name, now=now, limit=37)
            await asyncio.sleep(0)  # hold the row locks while the other claims
        got[name].extend(j.job_id for j in jobs)
        return len(jobs)

    try:
        rounds = 0
        while True:
            rounds += 1
            a, b = await asyncio.gather(claimer(engine, "a"), claimer(other, "b"))
            if a == 0 and b == 0:
                break
        assert rounds > 10
    finally:
        await other.dispose()
    union = got["a"] + got["b"]
    assert len(union) == len(set(union)), "a job was claimed twice"
    assert sorted(union) == due
    assert got["a"] and got["b"]
    async with engine.connect() as conn:
        per_job = (await conn.execute(text(
            "SELECT count(*) AS n, count(DISTINCT a.job_id) AS jobs, max(a.attempt_no) AS top "
            "FROM notification_attempts a JOIN notification_jobs j ON j.id = a.job_id WHERE j.earliest_at < :c"),
            {"c": CUTOFF})).mappings().one()
    assert (per_job["n"], per_job["jobs"], per_job["top"]) == (3000, 3000, 1)


async def test_attempt_row_is_committed_with_the_claim(engine):
    [by_pref] = await make_jobs(engine, 1, BASE, notify_channel="sms")
    [by_call] = await make_jobs(engine, 1, BASE, channel="call", notify_channel="sms")
    claimed = {j.job_id: j for j in await claim(engine, now=BASE + timedelta(seconds=1))}
    assert claimed[by_pref].channel == "sms"      # the client's preference resolved
    assert claimed[by_call].channel == "call"
    assert claimed[by_pref].attempt_no == 1
    assert claimed[by_pref].prompt_text == "Здравствуйте"

    # visible from another connection: committed before any originate
    [attempt] = await attempts_of(engine, by_pref)
    assert (attempt["id"], attempt["attempt_no"], attempt["state"], attempt["channel"]) == (
        claimed[by_pref].attempt_id, 1, "dialing", "sms")
    assert attempt["started_at"] == BASE + timedelta(seconds=1)

    # the same attempt can never be inserted twice
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO notification_attempts (job_id, attempt_no, channel) "
                                    "VALUES (:j, 1, 'call')"), {"j": by_pref})


async def test_rolled_back_claim_leaves_the_job_claimable(engine):
    ids = await make_jobs(engine, 4, BASE)
    now = BASE + timedelta(minutes=1)

    class Crash(Exception):
        pass

    with pytest.raises(Crash):
        async with engine.begin() as conn:
            jobs = await claim_due_jobs(conn, worker="doomed", now=now, limit=10)
            assert len(jobs) == 4
            raise Crash  # the dialer died before committing
    for job_id in ids:
        row = await job_row(engine, job_id)
        assert (row["status"], row["attempts_made"], row["claimed_by"]) == ("pending", 0, None)
        assert await attempts_of(engine, job_id) == []
    again = await claim(engine, now=now, limit=10)
    assert sorted(j.job_id for j in again) == ids
    assert {j.attempt_no for j in again} == {1}


async def test_release_stale_reconciles_crashed_attempts(engine):
    live, dead, unrecorded, fresh = await make_jobs(engine, 4, BASE)
    claimed = await claim(engine, now=BASE + timedelta(minutes=1), limit=3)
    assert sorted(j.job_id for j in claimed) == [live, dead, unrecorded]
    async with engine.begin() as conn:
        for job_id, channel_id in ((live, "chan-live"), (dead, "chan-dead")):
            await conn.execute(text("UPDATE notification_attempts SET channel_id = :c WHERE job_id = :j"),
                               {"c": channel_id, "j": job_id})
    # ``fresh`` is claimed later than older_than: a dialer may be originating it right now
    [late] = await claim(engine, now=BASE + timedelta(hours=2), limit=5)
    assert late.job_id == fresh

    release_at = BASE + timedelta(hours=3)
    async with engine.begin() as conn:
        n = await release_stale(conn, older_than=BASE + timedelta(hours=1), live_channel_ids={"chan-live"},
                                now=release_at)
    assert n == 2
    for job_id in (dead, unrecorded):
        row = await job_row(engine, job_id)
        assert (row["status"], row["attempts_made"], row["claimed_by"]) == ("scheduled", 1, None)
        assert row["next_attempt_at"] == release_at
        [attempt] = await attempts_of(engine, job_id)
        assert (attempt["state"], attempt["cause"], attempt["ended_at"]) == ("failed", CRASH_CAUSE, release_at)
    for job_id in (live, fresh):
        assert (await job_row(engine, job_id))["status"] == "dialing"
        assert [a["state"] for a in await attempts_of(engine, job_id)] == ["dialing"]

    # idempotent; the released jobs are claimed again as attempt 2, never a second attempt 1
    async with engine.begin() as conn:
        assert await release_stale(conn, older_than=BASE + timedelta(hours=1),
                                   live_channel_ids={"chan-live"}, now=release_at) == 0
    retried = await claim(engine, now=release_at, limit=10)
    assert sorted(j.job_id for j in retried) == sorted([dead, unrecorded])
    assert {j.attempt_no for j in retried} == {2}
    assert [a["attempt_no"] for a in await attempts_of(engine, dead)] == [1, 2]


async def test_non_due_and_final_jobs_are_never_claimed(engine):
    due = await make_jobs(engine, 2, BASE, status="scheduled")
    await make_jobs(engine, 2, BASE + timedelta(days=1))                               # not due yet
    for status in sorted(FINAL_STATES | {"dialing", "no_action"}):
        await make_jobs(engine, 1, BASE, status=status)
    await make_jobs(engine, 1, BASE, deadline_at=BASE + timedelta(minutes=1))        # deadline passed
    await make_jobs(engine, 1, BASE, status="scheduled", attempts_made=5, max_attempts=5)  # barrier reached
    claimed = await claim(engine, now=BASE + timedelta(hours=1), limit=100)
    assert sorted(j.job_id for j in claimed) == due
    assert await claim(engine, now=BASE + timedelta(hours=1), limit=100) == []
