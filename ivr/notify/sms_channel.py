"""The SMS channel of the notification robot: send a claimed job's text, and turn the SMSC's
delivery receipts into the job's result.

    channel = SmsChannel(engine, driver, policies)     # driver: SmppSender or HttpSmsGateway
    await channel.deliver(claimed)                     # a ClaimedJob with channel "sms"
    asyncio.create_task(channel.run_receipts())        # forever: receipts -> on_receipt

``deliver``: the attempt row was committed by the claim (ivr/notify/claim.py) before we get
here. The text (the job's rendered ``prompt_text``) goes to the driver; then, in one
transaction:

* accepted -> ``mark_sms_sent`` (attempt ``sent`` with the SMSC message id, job ``sent``);
* SMSC down / timeout / throttled / queue full -> ``finish_attempt`` with outcome
  ``smsc_unavailable`` (the policy retries after its delay, 5 minutes by default);
* rejected for good (bad number, ...) -> outcome ``sms_undelivered``, the SMSC status in the
  cause.

SMSC faults never raise out of ``deliver``; database errors do (after a few tries for the
``sent`` mark, see docs/sms.md "Crash safety").

``on_receipt``: the attempt is found by its ``sms_message_id``; DELIVRD finishes it
``delivered`` (job ``delivered``, webhook queued), UNDELIV / EXPIRED / REJECTD / DELETED /
UNKNOWN finish it ``sms_undelivered`` (retried by the policy); intermediate receipts (ENROUTE,
ACCEPTD) are logged only. A receipt can overtake the ``sent`` commit (the SMSC answers
submit_sm and sends the receipt right after): an unknown message id first waits for this
process's sends in flight to commit, then is looked up again. Still unknown -> logged, ignored.
A second receipt for the same message (each segment of a long SMS has one) changes nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import logging
from datetime import datetime, timezone
from typing import AsyncIterator, Callable, Optional, Protocol

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from ivr.notify.claim import ClaimedJob
from ivr.notify.outcomes import AttemptResult, Finished, finish_attempt, mark_sms_sent
from ivr.notify.retry import PolicySet
from ivr.sms.smpp import (DeliveryReceipt, SmppError, SmppSubmitError, SmppUnavailable,
                          status_name)

log = logging.getLogger("ivr.notify.sms")

DELIVERED = "DELIVRD"
# Not final: the message is on its way; a final receipt follows.
INTERMEDIATE = frozenset({"ENROUTE", "ACCEPTD"})
# submit_sm_resp statuses that mean "not now" rather than "never".
TEMPORARY_SUBMIT_STATUSES = frozenset({
    0x08,   # ESME_RSYSERR
    0x14,   # ESME_RMSGQFUL
    0x58,   # ESME_RTHROTTLED
    0x64,   # ESME_RX_T_APPN (temporary application error)
})
MARK_TRIES = 4
MARK_FIRST_DELAY = 0.5
RECEIPT_WAIT = 30.0          # how long a receipt waits for sends in flight to commit


class SmsDriver(Protocol):
    async def send(self, e164: str, text: str) -> str: ...
    def receipts(self) -> AsyncIterator[DeliveryReceipt]: ...


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


_FIND = text("""
SELECT id, job_id, state FROM notification_attempts
WHERE sms_message_id = :mid AND channel = 'sms'
ORDER BY (state = 'sent') DESC, id DESC
LIMIT 1
""")


def _submit_failure(exc: Exception) -> tuple[str, str]:
    """(outcome, cause) for an exception from ``driver.send``; causes fit the attempt's 40
    characters: ``smsc_unavailable ...`` (temporary) or ``rejected ...`` / ``gateway_bad_answer ...``."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, SmppUnavailable):
        return "smsc_unavailable", f"smsc_unavailable {cause}" if cause else "smsc_unavailable"
    if isinstance(exc, SmppSubmitError):
        if cause:                               # the HTTP gateway's rejection, already worded
            return "sms_undelivered", cause
        status = exc.command_status
        worded = f"{status_name(status)} (0x{status:02X})"
        if status in TEMPORARY_SUBMIT_STATUSES:
            return "smsc_unavailable", f"smsc_unavailable {worded}"
        return "sms_undelivered", f"rejected {worded}"
    # bind refused on reconnect, protocol error, a driver's bug: we do not know the SMSC has it
    return "smsc_unavailable", f"smsc_unavailable {type(exc).__name__}"


def _transient_db(exc: BaseException) -> bool:
    """A database error worth retrying (connection lost or refused), not a bug."""
    return isinstance(exc, (OperationalError, OSError)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated)


def _receipt_cause(receipt: DeliveryReceipt) -> str:
    cause = f"receipt {receipt.status}"
    if receipt.error and receipt.error.strip("0"):
        cause += f" err:{receipt.error}"
    return cause


_KEY_SENTENCE = re.compile(r"[^.!?…]*\bнажмите\b[^.!?…]*[.!?…]?\s*", re.IGNORECASE)


def sms_text(prompt: str) -> str:
    """The call prompt as an SMS: sentences asking for a key press ("Если получили, нажмите 1")
    mean nothing in a text message and are dropped; the rest is sent as written."""
    text = _KEY_SENTENCE.sub("", prompt).strip()
    return re.sub(r"\s+", " ", text) or prompt.strip()


class SmsChannel:
    """Sends claimed SMS jobs through ``driver`` and applies its delivery receipts."""

    def __init__(self, engine: AsyncEngine, driver: SmsDriver, policies: PolicySet, *,
                 clock: Callable[[], datetime] = utc_now, receipt_wait: float = RECEIPT_WAIT):
        self.engine = engine
        self.driver = driver
        self.policies = policies
        self.clock = clock
        self.receipt_wait = receipt_wait
        self._tokens = itertools.count(1)
        self._in_flight: dict[int, asyncio.Future] = {}

    # -- sending

    async def deliver(self, claimed: ClaimedJob) -> Optional[Finished]:
        """Send the SMS of a claimed attempt; see the module doc. Returns the Finished record
        when the attempt ended at once (SMSC fault), None when it waits for its receipt."""
        if claimed.channel != "sms":
            raise ValueError(f"job {claimed.job_id} attempt {claimed.attempt_no} is a {claimed.channel!r} attempt")
        body = sms_text(claimed.prompt_text or "")
        if not body:
            log.error("event=sms_no_text job_id=%s attempt=%s", claimed.job_id, claimed.attempt_no)
            return await self._finish(claimed.attempt_id, "failure", "no prompt text")
        token = next(self._tokens)
        self._in_flight[token] = asyncio.get_running_loop().create_future()
        try:
            try:
                message_id = await self.driver.send(claimed.e164, body)
            except asyncio.CancelledError:
                raise
            except Exception as exc:                    # noqa: BLE001 - every SMSC fault ends the attempt
                outcome, cause = _submit_failure(exc)
                level = logging.WARNING if isinstance(exc, SmppError) else logging.ERROR
                log.log(level, "event=sms_send_failed job_id=%s attempt=%s outcome=%s cause=%r reason=%r",
                        claimed.job_id, claimed.attempt_no, outcome, cause, str(exc)[:200],
                        exc_info=not isinstance(exc, SmppError))
                return await self._finish(claimed.attempt_id, outcome, cause)
            status = await self._mark_sent(claimed, message_id)
            log.info("event=sms_sent job_id=%s attempt=%s message_id=%s status=%s parts=%d",
                     claimed.job_id, claimed.attempt_no, message_id, status, _parts(body))
            return None
        finally:
            future = self._in_flight.pop(token)
            if not future.done():
                future.set_result(None)

    async def _mark_sent(self, claimed: ClaimedJob, message_id: str) -> str:
        """mark_sms_sent, retried while the database is briefly unreachable: the SMSC already
        has the message, and an attempt left without its message id would be released and
        sent again by release_stale."""
        delay = MARK_FIRST_DELAY
        for attempt in range(1, MARK_TRIES + 1):
            try:
                async with self.engine.begin() as conn:
                    return await mark_sms_sent(conn, claimed.attempt_id, message_id, now=self.clock(),
                                               text_sent=sms_text(claimed.prompt_text or ""))
            except Exception as exc:
                if not _transient_db(exc) or attempt == MARK_TRIES:
                    log.error("event=sms_mark_sent_failed job_id=%s attempt=%s message_id=%s reason=%r",
                              claimed.job_id, claimed.attempt_no, message_id, str(exc)[:200])
                    raise
                log.warning("event=sms_mark_sent_retry job_id=%s attempt=%s message_id=%s retry_in=%.1fs",
                            claimed.job_id, claimed.attempt_no, message_id, delay)
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def _finish(self, attempt_id: int, outcome: str, cause: str) -> Finished:
        now = self.clock()
        async with self.engine.begin() as conn:
            return await finish_attempt(conn, attempt_id, AttemptResult(outcome=outcome, cause=cause, ended_at=now),
                                        policies=self.policies, now=now)

    # -- receipts

    async def _find(self, message_id: str):
        async with self.engine.connect() as conn:
            return (await conn.execute(_FIND, {"mid": message_id[:120]})).first()

    async def on_receipt(self, receipt: DeliveryReceipt) -> Optional[Finished]:
        """Apply one delivery receipt; see the module doc. Returns the Finished record, or
        None for an intermediate receipt or an unknown message id."""
        if receipt.status in INTERMEDIATE:
            log.info("event=sms_receipt_intermediate message_id=%s status=%s", receipt.message_id, receipt.status)
            return None
        row = await self._find(receipt.message_id)
        if row is None and self._in_flight:
            # The receipt may have overtaken the commit of its ``sent`` mark.
            waiting = list(self._in_flight.values())
            await asyncio.wait(waiting, timeout=self.receipt_wait)
            row = await self._find(receipt.message_id)
        if row is None:
            log.warning("event=sms_receipt_unknown message_id=%s status=%s action=ignored",
                        receipt.message_id, receipt.status)
            return None
        if receipt.status == DELIVERED:
            outcome, cause = "delivered", _receipt_cause(receipt)
        else:
            outcome, cause = "sms_undelivered", _receipt_cause(receipt)
        finished = await self._finish(row.id, outcome, cause)
        if finished.already:
            log.info("event=sms_receipt_duplicate job_id=%s message_id=%s status=%s segment=%s",
                     finished.job_id, receipt.message_id, receipt.status, receipt.segment_id)
        else:
            log.info("event=sms_receipt job_id=%s message_id=%s status=%s done_at=%s job_status=%s",
                     finished.job_id, receipt.message_id, receipt.status,
                     receipt.done_at.isoformat() if receipt.done_at else "", finished.status)
        return finished

    async def run_receipts(self, *, error_delay: float = 1.0) -> None:
        """Consume ``driver.receipts()`` forever and apply each with ``on_receipt``. A database
        outage is waited out (the receipt is retried with back-off); any other error on one
        receipt is logged and that receipt skipped; a failing receipt stream is reopened."""
        while True:
            try:
                async for receipt in self.driver.receipts():
                    await self._apply(receipt, error_delay)
            except asyncio.CancelledError:
                raise
            except Exception:                           # noqa: BLE001 - keep consuming
                log.exception("event=sms_receipts_stream_failed action=reopen retry_in=%.1fs", error_delay)
            await asyncio.sleep(error_delay)

    async def _apply(self, receipt: DeliveryReceipt, error_delay: float) -> None:
        delay = error_delay
        while True:
            try:
                await self.on_receipt(receipt)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:                    # noqa: BLE001 - a bad receipt must not stop the loop
                if not _transient_db(exc):
                    log.exception("event=sms_receipt_failed message_id=%s status=%s action=skipped",
                                  receipt.message_id, receipt.status)
                    return
                log.warning("event=sms_receipt_retry message_id=%s reason=%r retry_in=%.1fs",
                            receipt.message_id, str(exc)[:200], delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)


def _parts(body: str) -> int:
    units = len(body.encode("utf-16-be")) // 2
    return 1 if units <= 70 else -(-units // 67)
