"""Delivering the CRM webhook: the ``webhook_deliveries`` outbox, POSTed with backoff.

ivr.notify.outcomes.finish_attempt queues one row per job that reached a final status, in the
same transaction as that status. ``WebhookSender`` sends them:

    sender = WebhookSender(engine, "https://crm.example/robot-hook", secret="...")
    task = asyncio.create_task(sender.run())     # until sender.stop(); then await sender.close()
    await sender.send_due_once()                 # one round (tests, cron-like use)

One round:

1. **claim** (short transaction): up to ``batch`` undelivered rows due at ``now`` are picked
   with ``FOR UPDATE SKIP LOCKED`` and leased by moving ``next_try_at`` to ``now + lease`` (the
   HTTP timeout plus a margin). The transaction commits at once: no row lock and no transaction
   is held while the HTTP request runs. Several senders (processes or hosts) never pick the same
   row: a leased row is not due for anyone else until the lease ends.
2. **POST** each row's ``payload`` as JSON (``Content-Type: application/json``, UTF-8) with
   ``Idempotency-Key: job-<job id>-<event>`` and, when a secret is configured,
   ``X-Ivr-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes with the secret>``.
   Redirects are not followed.
3. **record** (short transaction): 2xx -> ``delivered_at``; anything else (another status, a
   timeout, connection refused) -> ``tries + 1``, ``last_error`` (short: the status or the kind
   of error, never the URL or the secret) and ``next_try_at = now + backoff``: 30 s * 2^tries,
   capped at ``max_backoff`` (default 1 h), minus up to 25 % random jitter so many rows that
   failed together do not come back together. A failure is recorded only while the row's lease
   is still ours (``next_try_at`` unchanged), so a sender whose lease ran out never overwrites
   a newer result.

A receiver that is down delays only its rows: the call flow never waits for it, and a failed
POST costs one timeout per row and round. Without a URL the sender logs once and idles; the
rows stay queued until a URL is configured. Delivery is at-least-once (a sender killed after the
POST and before recording it sends the row again); receivers deduplicate on Idempotency-Key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

import aiohttp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("ivr.notify.webhook")

BASE_BACKOFF = 30.0          # seconds before the first retry
DEFAULT_MAX_BACKOFF = 3600.0
DEFAULT_TIMEOUT = 10.0
LEASE_MARGIN = 30.0          # seconds a claim outlives the HTTP timeout
SIGNATURE_HEADER = "X-Ivr-Signature"
MAX_ERROR = 200

_CLAIM = text("""
WITH due AS (
    SELECT id FROM webhook_deliveries
    WHERE delivered_at IS NULL AND next_try_at <= :now
    ORDER BY next_try_at, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries w SET next_try_at = :lease_until
FROM due WHERE w.id = due.id
RETURNING w.id, w.job_id, w.event, w.payload, w.tries
""")

_DELIVERED = text("""
UPDATE webhook_deliveries SET delivered_at = :now, last_error = NULL
WHERE id = :id AND delivered_at IS NULL
""")

_FAILED = text("""
UPDATE webhook_deliveries SET tries = tries + 1, last_error = :error, next_try_at = :next_try_at
WHERE id = :id AND delivered_at IS NULL AND next_try_at = :lease_until
""")


def sign(secret: str, body: bytes) -> str:
    """The ``X-Ivr-Signature`` value of ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """For receivers (and tests): does ``header`` sign ``body`` with ``secret``?"""
    return bool(header) and hmac.compare_digest(sign(secret, body), header)


def backoff(tries: int, max_backoff: float = DEFAULT_MAX_BACKOFF, *, base: float = BASE_BACKOFF,
            rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the failure of try number ``tries + 1`` (``tries`` failures before):
    ``base * 2**tries`` capped at ``max_backoff``, less up to 25 % jitter."""
    delay = min(max_backoff, base * (2 ** min(tries, 32)))
    return delay * (1 - 0.25 * rand())


def idempotency_key(job_id: int, event: str) -> str:
    return f"job-{job_id}-{event}"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class _Due:
    id: int
    job_id: int
    event: str
    payload: dict
    tries: int


class WebhookSender:
    """Sends due ``webhook_deliveries`` rows to ``url``; see the module doc."""

    def __init__(self, engine: AsyncEngine, url: str | None, secret: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT, max_backoff: float = DEFAULT_MAX_BACKOFF,
                 clock: Callable[[], datetime] = _utcnow, batch: int = 20, poll_interval: float = 2.0,
                 base_backoff: float = BASE_BACKOFF) -> None:
        if timeout <= 0 or max_backoff <= 0 or base_backoff <= 0:
            raise ValueError("timeout, max_backoff and base_backoff must be positive")
        if not 1 <= batch <= 1000:
            raise ValueError("batch must be 1..1000")
        self.engine = engine
        self.url = (url or "").strip() or None
        self.secret = secret or None
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.base_backoff = base_backoff
        self.clock = clock
        self.batch = batch
        self.poll_interval = poll_interval
        self.lease = timedelta(seconds=timeout + LEASE_MARGIN)
        self._session: aiohttp.ClientSession | None = None
        self._stop = asyncio.Event()
        self._warned_no_url = False

    # --- one round ------------------------------------------------------------------------
    async def send_due_once(self) -> int:
        """Claim, POST and record the rows due now; returns how many were tried."""
        if self.url is None:
            self._warn_no_url()
            return 0
        now = self.clock()
        lease_until = now + self.lease
        async with self.engine.begin() as conn:
            rows = (await conn.execute(_CLAIM, {"now": now, "limit": self.batch,
                                                "lease_until": lease_until})).mappings().all()
        if not rows:
            return 0
        due = [_Due(**row) for row in rows]
        await asyncio.gather(*(self._deliver(item, lease_until) for item in due))
        return len(due)

    async def _deliver(self, item: _Due, lease_until: datetime) -> None:
        error = await self._post(item)
        now = self.clock()
        async with self.engine.begin() as conn:
            if error is None:
                await conn.execute(_DELIVERED, {"id": item.id, "now": now})
                log.info("event=webhook_delivered id=%s job_id=%s tries=%s", item.id, item.job_id, item.tries + 1)
                return
            delay = backoff(item.tries, self.max_backoff, base=self.base_backoff)
            next_try_at = now + timedelta(seconds=delay)
            await conn.execute(_FAILED, {"id": item.id, "error": error, "next_try_at": next_try_at,
                                         "lease_until": lease_until})
        log.warning("event=webhook_failed id=%s job_id=%s tries=%s error=%r retry_in=%.0fs",
                    item.id, item.job_id, item.tries + 1, error, delay)

    async def _post(self, item: _Due) -> str | None:
        """POST one row; None when the receiver answered 2xx, else a short error."""
        body = json.dumps(item.payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key(item.job_id, item.event),
                   "User-Agent": "ivr-notify-webhook/1"}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        session = self._client()
        try:
            async with session.post(self.url, data=body, headers=headers, allow_redirects=False) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"[:MAX_ERROR]
        except asyncio.TimeoutError:
            return f"timeout after {self.timeout:g}s"
        except aiohttp.ClientConnectorError as exc:
            reason = getattr(exc.os_error, "strerror", None) or type(exc.os_error).__name__
            return f"connection failed: {reason}"[:MAX_ERROR]
        except aiohttp.ClientError as exc:
            return f"HTTP client error: {type(exc).__name__}"[:MAX_ERROR]

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    def _warn_no_url(self) -> None:
        if not self._warned_no_url:
            self._warned_no_url = True
            log.warning("event=webhook_disabled reason='no webhook URL configured' "
                        "note='final job statuses stay queued in webhook_deliveries'")

    # --- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        """Send due rows until ``stop()``. A full batch is followed at once by the next round;
        otherwise waits ``poll_interval``. Database errors are logged and retried; they never
        end the loop."""
        self._stop.clear()
        try:
            while not self._stop.is_set():
                wait = self.poll_interval
                if self.url is None:
                    self._warn_no_url()
                    wait = max(self.poll_interval, 60.0)
                else:
                    try:
                        if await self.send_due_once() >= self.batch:
                            wait = 0
                    except asyncio.CancelledError:
                        raise
                    except Exception:  # noqa: BLE001 - the database may be restarting; keep going
                        log.exception("event=webhook_round_failed")
                        wait = max(self.poll_interval, 5.0)
                if wait:
                    try:
                        await asyncio.wait_for(self._stop.wait(), timeout=wait)
                    except asyncio.TimeoutError:
                        pass
        finally:
            await self.close()

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


async def queue_counts(conn) -> dict[str, int]:
    """Outbox summary for status displays: delivered, waiting (never tried), retrying (failed at
    least once, not delivered yet)."""
    row = (await conn.execute(text("""
        SELECT count(*) FILTER (WHERE delivered_at IS NOT NULL) AS delivered,
               count(*) FILTER (WHERE delivered_at IS NULL AND tries = 0) AS waiting,
               count(*) FILTER (WHERE delivered_at IS NULL AND tries > 0) AS retrying
        FROM webhook_deliveries"""))).mappings().one()
    return dict(row)
