"""Dialers claiming due notification jobs, and reconciling the claims of a crashed dialer.

``claim_due_jobs`` is one SQL statement: it picks due jobs in a claimable state with
``FOR UPDATE SKIP LOCKED`` (several dialer processes never wait for, nor take, each other's rows),
moves them to ``dialing`` (the state machine's ``claim``), counts the attempt and inserts the
``notification_attempts`` row of that attempt - all in the caller's transaction. After the commit
the attempt exists *before* any originate; UNIQUE (job_id, attempt_no) makes a second row for the
same attempt impossible, so a dialer killed at any point can never place one attempt twice. A
dialer killed before the commit leaves nothing: the job stays claimable.

``release_stale`` is the restart half: attempts left ``dialing`` whose channel Asterisk no longer
has (the dialer died) are failed with cause ``dialer_crashed`` and their jobs go back to
``scheduled`` (``release``); the next claim makes attempt ``n + 1``, never a second ``n``.

Both take an ``AsyncConnection`` whose transaction the caller owns
(``async with engine.begin() as conn``). See docs/claiming.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ivr.notify.jobs import CLAIMABLE_STATES, transition

# The states the statements write, taken from the state machine (import fails if it forbids them).
DIALING = transition(CLAIMABLE_STATES[0], "claim")
assert all(transition(s, "claim") == DIALING for s in CLAIMABLE_STATES), "claim must lead to one state"
RELEASED = transition(DIALING, "release")
ATTEMPT_DIALING = "dialing"
ATTEMPT_FAILED = "failed"
CRASH_CAUSE = "dialer_crashed"
MAX_CLAIM = 10_000

_CLAIMABLE_SQL = ", ".join(f"'{s}'" for s in CLAIMABLE_STATES)

# Due: next_attempt_at <= now (create_job sets it to earliest_at; leaving the claimable states
# clears it, so NULL is never due). A job past its deadline is left for expiry, a job at its
# barrier is never dialled again. ORDER BY next_attempt_at uses ix_notification_jobs_due.
CLAIM_SQL = text(f"""
WITH picked AS (
    SELECT j.id
    FROM notification_jobs j
    WHERE j.status IN ({_CLAIMABLE_SQL})
      AND j.next_attempt_at <= :now
      AND (j.deadline_at IS NULL OR j.deadline_at > :now)
      AND j.attempts_made < j.max_attempts
    ORDER BY j.next_attempt_at, j.id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE notification_jobs j
    SET status = :dialing, claimed_by = :worker, claimed_at = :now, updated_at = :now,
        attempts_made = j.attempts_made + 1, next_attempt_at = NULL
    FROM picked
    WHERE j.id = picked.id AND j.status IN ({_CLAIMABLE_SQL})
    RETURNING j.id, j.client_id, j.e164, j.template, j.variables, j.channel, j.attempts_made,
              j.max_attempts, j.prompt_text, j.deadline_at
), attempt AS (
    INSERT INTO notification_attempts (job_id, attempt_no, channel, state, started_at, prompt_text)
    SELECT c.id, c.attempts_made,
           CASE WHEN c.channel = 'preference' THEN cl.notify_channel ELSE c.channel END,
           :attempt_state, :now, c.prompt_text
    FROM claimed c JOIN clients cl ON cl.id = c.client_id
    RETURNING id, job_id, attempt_no, channel
)
SELECT c.id AS job_id, a.id AS attempt_id, a.attempt_no, a.channel, c.client_id, c.e164, c.template,
       c.variables, c.max_attempts, c.prompt_text, c.deadline_at
FROM claimed c JOIN attempt a ON a.job_id = c.id
ORDER BY c.id
""")

# Only the job's current attempt (attempts_made = attempt_no) of a job still ``dialing``; an SMS
# attempt only when no message id was recorded (never handed to the SMSC as far as we know).
RELEASE_SQL = text(f"""
WITH stale AS (
    SELECT a.id AS attempt_id, a.job_id
    FROM notification_attempts a JOIN notification_jobs j ON j.id = a.job_id
    WHERE a.state = :attempt_state
      AND a.started_at < :older_than
      AND j.status = :dialing
      AND j.attempts_made = a.attempt_no
      AND (a.channel_id IS NULL OR NOT (a.channel_id = ANY(CAST(:live AS text[]))))
      AND (a.channel = 'call' OR a.sms_message_id IS NULL)
      AND (CAST(:claimed_by AS text) IS NULL OR j.claimed_by = :claimed_by)
    FOR UPDATE OF a, j SKIP LOCKED
), failed AS (
    UPDATE notification_attempts a
    SET state = :failed, cause = :cause, ended_at = :now
    FROM stale WHERE a.id = stale.attempt_id
    RETURNING a.job_id
)
UPDATE notification_jobs j
SET status = :released, next_attempt_at = :now, claimed_by = NULL, claimed_at = NULL, updated_at = :now
FROM failed WHERE j.id = failed.job_id AND j.status = :dialing
RETURNING j.id
""")


@dataclass(frozen=True)
class ClaimedJob:
    """A job this dialer now holds (status ``dialing``) with its committed attempt."""

    job_id: int
    attempt_id: int
    attempt_no: int
    channel: str          # call / sms (``preference`` resolved from the client's card)
    client_id: int
    e164: str
    template: str
    variables: dict
    max_attempts: int
    prompt_text: str | None
    deadline_at: datetime | None


async def claim_due_jobs(conn: AsyncConnection, *, worker: str, now: datetime, limit: int) -> list[ClaimedJob]:
    """Claim up to ``limit`` jobs due at ``now`` for dialer ``worker``, oldest due first.

    One statement; the caller commits (then originates). Concurrent callers get disjoint sets.
    """
    if now.tzinfo is None:
        raise ValueError("now needs a time zone")
    if not (1 <= limit <= MAX_CLAIM):
        raise ValueError(f"limit must be between 1 and {MAX_CLAIM}")
    if not worker or len(worker) > 80:
        raise ValueError("worker must be 1-80 characters")
    rows = (await conn.execute(CLAIM_SQL, {
        "now": now, "limit": limit, "worker": worker, "dialing": DIALING, "attempt_state": ATTEMPT_DIALING,
    })).mappings().all()
    return [ClaimedJob(**row) for row in rows]


async def release_stale(conn: AsyncConnection, *, older_than: datetime, live_channel_ids: set[str],
                        now: datetime | None = None, claimed_by: str | None = None) -> int:
    """Reconcile attempts a crashed dialer left ``dialing``: started before ``older_than`` and
    whose channel is not among Asterisk's ``live_channel_ids`` (or was never recorded). Each is
    failed with cause ``dialer_crashed`` and its job released to ``scheduled``, due at ``now``
    (default ``older_than``); with ``claimed_by`` only that dialer's (a dialer restarting reconciles
    its own at once; others' only when older than any call can last). Returns the number of jobs released. Rows another transaction holds
    are skipped (a dialer finishing the attempt right now); run it again later.
    """
    if older_than.tzinfo is None or (now is not None and now.tzinfo is None):
        raise ValueError("times need a time zone")
    result = await conn.execute(RELEASE_SQL, {
        "older_than": older_than, "now": now or older_than, "live": sorted(live_channel_ids),
        "attempt_state": ATTEMPT_DIALING, "dialing": DIALING, "failed": ATTEMPT_FAILED, "cause": CRASH_CAUSE,
        "released": RELEASED, "claimed_by": claimed_by,
    })
    return len(result.all())
