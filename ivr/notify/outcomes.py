"""Recording how a contact attempt ended, and what happens to its job next.

One function, ``finish_attempt``, used by every channel (the call flow, the SMS sender and its
delivery receipts, the dialer's failures to originate). In the caller's transaction it:

1. locks the attempt and its job (``FOR UPDATE``); an attempt already finished is left alone
   (a receipt or an event delivered twice changes nothing);
2. writes the attempt: state, cause, Asterisk hangup cause, digits, times, prompt text;
3. if the attempt is still the job's current one (a dialer restart may have released it), asks
   the retry policy (ivr/notify/retry.py) what comes next and moves the job through the state
   machine (ivr/notify/jobs.py): final result, or ``scheduled`` at the next slot in the window;
   with ``sms_after_calls`` the last unanswered call turns the job into an SMS job instead;
4. writes the attempt into the client's contact history (``contacts``);
5. on a final status queues the CRM webhook (``webhook_deliveries``, sent by ivr/notify/webhook.py)
   and, when the client said the documents did not arrive, a task for his manager.

Everything lands in one commit or not at all, so a crash never leaves a job half-recorded.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ivr.notify.jobs import is_final, transition
from ivr.notify.retry import ACTIONS, OUTCOMES, PolicySet, next_attempt
from ivr.notify.window import client_timezone

log = logging.getLogger("ivr.notify.outcomes")

# Outcomes that end the attempt with the client having heard us (attempt state ``done``).
HEARD = frozenset({"confirmed", "not_received", "no_action", "hangup_during_prompt", "delivered", "callback",
                   "handed_over"})
SMS_DELIVERED = "delivered"
# The speech dialog's final outcomes: a callback time agreed, or the client handed to his manager.
DIALOG_FINALS = {"callback": "callback", "handed_over": "hand_over"}

# Q.850 causes of an unanswered call -> the retry policy's outcome.
_BUSY_CAUSES = {17, 21}                  # user busy, call rejected (he pressed "decline")
_NO_ANSWER_CAUSES = {16, 18, 19, 31}     # normal clearing before answer, no user responding, no answer
_CONGESTION_CAUSES = {34, 38, 41, 42, 44, 47}   # no circuit, network out of order, temporary failure


def outcome_of_unanswered(cause: int | None) -> str:
    """The outcome of a call that was never answered, from its Q.850 hangup cause."""
    if cause in _BUSY_CAUSES:
        return "busy"
    if cause in _NO_ANSWER_CAUSES or cause is None or cause == 0:
        return "no_answer"
    if cause in _CONGESTION_CAUSES:
        return "congestion"
    return "failure"


@dataclass(frozen=True)
class AttemptResult:
    """How one attempt ended. ``outcome`` is a retry-policy outcome, a client action
    (confirmed / not_received) or ``delivered`` (an SMS receipt)."""

    outcome: str
    cause: str                         # human-readable, stored on the attempt ("busy (17)", ...)
    ended_at: datetime
    hangup_cause: int | None = None
    digits: str | None = None
    answered_at: datetime | None = None
    prompt_text: str | None = None
    callback_at: datetime | None = None        # outcome "callback": when to call him back
    task: tuple[str, str] | None = None        # (kind, text) of a task for his manager

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES + ACTIONS + (SMS_DELIVERED,) + tuple(DIALOG_FINALS):
            raise ValueError(f"unknown outcome {self.outcome!r}")
        if self.ended_at.tzinfo is None:
            raise ValueError("ended_at needs a time zone")


@dataclass(frozen=True)
class Finished:
    job_id: int
    attempt_id: int
    status: str                        # the job's status after this attempt
    result: str | None
    next_attempt_at: datetime | None
    reason: str
    stale: bool = False                # the attempt was no longer the job's current one
    already: bool = False              # the attempt had been finished before (duplicate event)


_LOCK = text("""
SELECT a.id AS attempt_id, a.attempt_no, a.state AS attempt_state, a.channel AS attempt_channel,
       a.started_at, a.channel_id, a.sms_message_id,
       j.id AS job_id, j.status, j.result, j.attempts_made, j.max_attempts, j.deadline_at, j.template,
       j.external_id, j.e164, j.prompt_text AS job_prompt, j.next_attempt_at, j.client_id, j.channel AS job_channel,
       c.timezone AS client_tz, c.assigned_operator_id, c.full_name, c.address_name
FROM notification_attempts a
JOIN notification_jobs j ON j.id = a.job_id
JOIN clients c ON c.id = j.client_id
WHERE a.id = :attempt_id
FOR UPDATE OF a, j
""")

_WRITE_ATTEMPT = text("""
UPDATE notification_attempts
SET state = :state, cause = :cause, hangup_cause = :hangup_cause, digits = :digits,
    answered_at = COALESCE(:answered_at, answered_at), ended_at = :ended_at,
    prompt_text = COALESCE(:prompt_text, prompt_text),
    delivered_at = CASE WHEN :delivered THEN :ended_at ELSE delivered_at END
WHERE id = :attempt_id
""")

_WRITE_JOB = text("""
UPDATE notification_jobs
SET status = :status, result = :result, next_attempt_at = :next_at, channel = :channel,
    max_attempts = :max_attempts, claimed_by = NULL, claimed_at = NULL, updated_at = :now,
    callback_at = COALESCE(:callback_at, callback_at)
WHERE id = :job_id
""")

_CONTACT = text("""
INSERT INTO contacts (client_id, operator_id, direction, at, call_uid, result, note)
VALUES (:client_id, NULL, 'outbound', :at, :call_uid, :result, :note)
""")

_ATTEMPTS_OF_JOB = text("""
SELECT attempt_no, channel, state, started_at, answered_at, ended_at, cause, hangup_cause, digits, delivered_at
FROM notification_attempts WHERE job_id = :job_id ORDER BY attempt_no
""")

_WEBHOOK = text("""
INSERT INTO webhook_deliveries (job_id, event, payload, next_try_at)
VALUES (:job_id, 'job.final', CAST(:payload AS jsonb), :now)
ON CONFLICT (job_id, event) DO NOTHING
""")

_TASK = text("""
INSERT INTO manager_tasks (client_id, operator_id, job_id, kind, body, due_at)
VALUES (:client_id, :operator_id, :job_id, :kind, :body, :due_at)
ON CONFLICT (job_id, kind) DO NOTHING
""")


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat() if value is not None else None


async def final_payload(conn: AsyncConnection, row, status: str, result: str | None, now: datetime) -> dict:
    attempts = (await conn.execute(_ATTEMPTS_OF_JOB, {"job_id": row.job_id})).mappings().all()
    return {
        "event": "job.final", "job_id": row.job_id, "external_id": row.external_id, "status": status,
        "result": result, "phone": row.e164, "template": row.template, "at": _iso(now),
        "attempts": [{**{k: v for k, v in a.items() if not isinstance(v, datetime)},
                      **{k: _iso(v) for k, v in a.items() if isinstance(v, datetime)}} for a in attempts],
    }


async def finish_attempt(conn: AsyncConnection, attempt_id: int, result: AttemptResult, *,
                         policies: PolicySet, now: datetime | None = None) -> Finished:
    """Record ``result`` for attempt ``attempt_id`` and move its job on; see the module doc."""
    now = now or result.ended_at
    row = (await conn.execute(_LOCK, {"attempt_id": attempt_id})).first()
    if row is None:
        raise LookupError(f"notification attempt {attempt_id} not found")
    if row.attempt_state in ("done", "failed"):
        return Finished(row.job_id, attempt_id, row.status, row.result, row.next_attempt_at,
                        "attempt already finished", already=True)

    delivered = result.outcome == SMS_DELIVERED
    attempt_state = "done" if result.outcome in HEARD else "failed"
    await conn.execute(_WRITE_ATTEMPT, {
        "attempt_id": attempt_id, "state": attempt_state, "cause": result.cause[:40],
        "hangup_cause": result.hangup_cause, "digits": (result.digits or None) and result.digits[:64],
        "answered_at": result.answered_at, "ended_at": result.ended_at, "prompt_text": result.prompt_text,
        "delivered": delivered,
    })
    await conn.execute(_CONTACT, {
        "client_id": row.client_id, "at": row.started_at,
        "call_uid": (row.channel_id or row.sms_message_id or f"notify-{attempt_id}")[:64],
        "result": f"robot:{result.outcome}"[:40],
        "note": _contact_note(row, result),
    })

    current = row.status in ("dialing", "sent") and row.attempts_made == row.attempt_no
    if not current:
        log.info("event=attempt_finished_stale job_id=%s attempt=%s status=%s outcome=%s",
                 row.job_id, row.attempt_no, row.status, result.outcome)
        return Finished(row.job_id, attempt_id, row.status, row.result, row.next_attempt_at,
                        f"attempt {row.attempt_no} is no longer the job's current one ({row.status})", stale=True)

    policy = replace(policies.for_template(row.template), barrier=row.max_attempts)
    tz = client_timezone(row.client_tz, row.e164)
    channel, max_attempts = row.job_channel, row.max_attempts
    if delivered:
        event, status_result, next_at, reason = "delivered", "delivered", None, "SMS delivered"
    elif result.outcome in DIALOG_FINALS:
        event, status_result, next_at = DIALOG_FINALS[result.outcome], result.outcome, None
        reason = (f"callback agreed for {_iso(result.callback_at)}" if result.outcome == "callback"
                  else f"handed to the manager: {result.task[0] if result.task else '?'}")
    else:
        decision = next_attempt(policy, result.outcome, row.attempts_made, now, tz, deadline=row.deadline_at)
        reason = decision.reason
        sms_at = (policy.window.clamp(now, tz)
                  if decision.result == "exhausted" and policy.sms_after_calls and row.attempt_channel == "call"
                  else None)
        if decision.kind == "retry":
            event, status_result, next_at = "retry", (result.outcome if result.outcome == "no_action" else None), decision.at
        elif sms_at is not None and (row.deadline_at is None or sms_at <= row.deadline_at):
            # The calls ran out: the text goes as an SMS instead, inside the window (and before
            # the deadline: a slot after it would never be claimed, the job would never end).
            event, status_result = "retry", None
            next_at = sms_at
            channel, max_attempts = "sms", row.max_attempts + policy.sms_attempts
            reason += f"; switching to SMS ({policy.sms_attempts} attempts)"
        else:
            event = {"confirmed": "confirmed", "not_received": "not_received",
                     "exhausted": "exhaust", "expired": "expire"}[decision.result]
            status_result, next_at = decision.result, None
    from_status = row.status
    if delivered and from_status == "dialing":   # the receipt overtook mark_sms_sent's commit
        from_status = transition(from_status, "sent")
    status = transition(from_status, event)
    await conn.execute(_WRITE_JOB, {
        "job_id": row.job_id, "status": status, "result": status_result, "next_at": next_at,
        "channel": channel, "max_attempts": max_attempts, "now": now, "callback_at": result.callback_at,
    })
    who = row.address_name or row.full_name
    if result.outcome == "callback" and result.callback_at is not None:
        local = result.callback_at.astimezone(client_timezone(row.client_tz, row.e164))
        await conn.execute(_TASK, {
            "client_id": row.client_id, "operator_id": row.assigned_operator_id, "job_id": row.job_id,
            "kind": "callback", "due_at": result.callback_at,
            "body": f"Перезвонить: {who} ({row.e164}) согласился на звонок {local:%d.%m %H:%M} ({local.tzinfo})",
        })
    if result.task is not None:
        kind, body = result.task
        await conn.execute(_TASK, {"client_id": row.client_id, "operator_id": row.assigned_operator_id,
                                   "job_id": row.job_id, "kind": kind[:40], "due_at": None,
                                   "body": f"{who} ({row.e164}): {body}"})
    if is_final(status):
        payload = await final_payload(conn, row, status, status_result, now)
        await conn.execute(_WEBHOOK, {"job_id": row.job_id, "payload": json.dumps(payload, ensure_ascii=False),
                                      "now": now})
    if status == "not_received":
        await conn.execute(_TASK, {
            "client_id": row.client_id, "operator_id": row.assigned_operator_id, "job_id": row.job_id,
            "kind": "not_received", "due_at": None,
            "body": f"{who} ({row.e164}) ответил роботу, что не получил: «{(row.job_prompt or row.template)[:300]}»",
        })
    log.info("event=attempt_finished job_id=%s attempt=%s outcome=%s status=%s next=%s reason=%r",
             row.job_id, row.attempt_no, result.outcome, status, _iso(next_at), reason)
    return Finished(row.job_id, attempt_id, status, status_result, next_at, reason)


def _contact_note(row, result: AttemptResult) -> str:
    kind = "SMS" if row.attempt_channel == "sms" else "звонок робота"
    parts = [f"{kind}, шаблон {row.template}, попытка {row.attempt_no}: {result.cause}"]
    if result.digits:
        parts.append(f"нажато {result.digits}")
    said = result.prompt_text or row.job_prompt
    if said:
        parts.append(f"текст: «{said[:500]}»")
    return "; ".join(parts)


async def mark_sms_sent(conn: AsyncConnection, attempt_id: int, message_id: str, *, now: datetime,
                        text_sent: str | None = None) -> str:
    """The SMSC accepted the SMS of ``attempt_id`` as ``message_id``: the attempt waits for its
    receipt (``sent``), and so does the job. Returns the job's status."""
    row = (await conn.execute(_LOCK, {"attempt_id": attempt_id})).first()
    if row is None:
        raise LookupError(f"notification attempt {attempt_id} not found")
    await conn.execute(text("UPDATE notification_attempts SET state = 'sent', sms_message_id = :mid, "
                            "prompt_text = COALESCE(:sent, prompt_text) WHERE id = :id AND state = 'dialing'"),
                       {"id": attempt_id, "mid": message_id[:120], "sent": text_sent})
    if row.status != "dialing" or row.attempts_made != row.attempt_no:
        return row.status
    status = transition(row.status, "sent")
    await conn.execute(text("UPDATE notification_jobs SET status = :s, updated_at = :now WHERE id = :id"),
                       {"s": status, "now": now, "id": row.job_id})
    return status


async def set_channel_id(conn: AsyncConnection, attempt_id: int, channel_id: str) -> None:
    """Record the Asterisk channel id of a call attempt (before the originate: the id is ours)."""
    await conn.execute(text("UPDATE notification_attempts SET channel_id = :cid WHERE id = :id"),
                       {"cid": channel_id, "id": attempt_id})
