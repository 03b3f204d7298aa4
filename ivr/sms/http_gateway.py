"""HTTP SMS gateway driver: the same interface as ``SmppSender`` for the SMS channel.

    gateway = HttpSmsGateway("https://sms.example/api/send", token="...", sender="Eni",
                             callback_url="https://ivr.example/sms/receipts?token=...",
                             id_field="id", timeout=10.0)
    await gateway.connect()                       # opens the HTTP session (no request made)
    message_id = await gateway.send("+79161234567", "Здравствуйте! ...")
    async for receipt in gateway.receipts():      # fed by the delivery callback handler
        ...
    await gateway.close()

``send`` POSTs ``{"to", "text", "sender", "callback_url"?}`` as JSON with
``Authorization: Bearer <token>`` and reads the message id from the JSON answer (``id_field``,
dotted for nested answers: ``"data.id"``). Errors use the SMPP driver's vocabulary, so the
channel treats both drivers alike:

* ``SmsUnavailable`` (a ``SmppUnavailable``): temporary - connection refused or reset, timeout,
  5xx, 429 Too Many Requests, 408. Retried later with backoff.
* ``SmsRejected`` (a ``SmppSubmitError``): permanent - any other 4xx (bad number, bad token,
  no balance...). ``cause`` holds the HTTP status and the gateway's error code if it gave one.
* ``SmsBadAnswer`` (a ``SmsRejected``): 2xx whose body is not JSON or has no message id. The
  gateway may have taken the message, so it is not treated as "try again in 5 minutes".

Delivery receipts: the gateway POSTs ``{"id", "status": delivered|undelivered|expired|rejected,
"at"?, "error"?}`` (or a list of them) to ``callback_url``. ``parse_callback`` turns that into
``ivr.sms.smpp.DeliveryReceipt`` (status in SMPP words: DELIVRD, UNDELIV, EXPIRED, REJECTD;
intermediate ones ENROUTE / ACCEPTD); ``callback_handler`` is an aiohttp handler that checks the
callback secret, parses and queues receipts for ``receipts()``. The token and the callback
secret are never logged nor put into exception messages.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Optional

import aiohttp
from aiohttp import web

from ivr.sms.smpp import ESME_RSUBMITFAIL, DeliveryReceipt, SmppError, SmppSubmitError, SmppUnavailable

log = logging.getLogger("ivr.sms.http_gateway")

# Gateway status -> SMPP receipt status (what the channel understands).
RECEIPT_STATUSES = {
    "delivered": "DELIVRD",
    "undelivered": "UNDELIV",
    "expired": "EXPIRED",
    "rejected": "REJECTD",
    "failed": "UNDELIV",
    "deleted": "DELETED",
    # intermediate: not final, the channel waits for the next receipt
    "enroute": "ENROUTE",
    "sent": "ENROUTE",
    "accepted": "ACCEPTD",
    "queued": "ACCEPTD",
}
TEMPORARY_HTTP = frozenset({408, 425, 429})
MAX_ANSWER = 64 * 1024
MAX_CALLBACK = 256 * 1024


class SmsUnavailable(SmppUnavailable):
    """The gateway could not take the message now (down, timeout, 5xx, 429)."""

    def __init__(self, message: str, *, http_status: Optional[int] = None, cause: str = "gateway"):
        self.http_status = http_status
        self.cause = cause
        super().__init__(message)


class SmsRejected(SmppSubmitError):
    """The gateway refused the message for good (4xx)."""

    def __init__(self, message: str, *, http_status: Optional[int] = None, code: str = "", cause: str = ""):
        self.http_status = http_status
        self.code = code
        self.command_status = ESME_RSUBMITFAIL      # SmppSubmitError compatibility
        self.cause = cause or f"rejected http {http_status}{' ' + code if code else ''}"
        SmppError.__init__(self, message)


class SmsBadAnswer(SmsRejected):
    """2xx, but the answer is not JSON or carries no message id."""


class ReceiptError(ValueError):
    """A delivery callback that cannot be understood."""


# ---------------------------------------------------------------- receipts

def _parse_at(value: Any) -> Optional[datetime]:
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise ReceiptError(f"bad 'at' timestamp {value!r}") from None
    if not isinstance(value, str):
        raise ReceiptError(f"bad 'at' value {value!r}")
    try:
        at = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ReceiptError(f"bad 'at' time {value[:40]!r}: expected ISO 8601") from None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def parse_receipt(data: Any, id_field: str = "id") -> DeliveryReceipt:
    """One callback object -> DeliveryReceipt; ReceiptError says what is wrong."""
    if not isinstance(data, dict):
        raise ReceiptError(f"expected a JSON object, got {type(data).__name__}")
    message_id = data.get(id_field, data.get("id"))
    if isinstance(message_id, int) and not isinstance(message_id, bool):
        message_id = str(message_id)
    if not isinstance(message_id, str) or not message_id.strip() or len(message_id) > 120:
        raise ReceiptError(f"receipt without a usable message id ({id_field!r})")
    raw_status = data.get("status")
    if not isinstance(raw_status, str):
        raise ReceiptError(f"receipt for {message_id!r} without a status")
    status = RECEIPT_STATUSES.get(raw_status.strip().lower())
    if status is None:
        raise ReceiptError(f"receipt for {message_id!r}: unknown status {raw_status[:30]!r}; "
                           f"expected {', '.join(RECEIPT_STATUSES)}")
    error = data.get("error", "")
    return DeliveryReceipt(message_id.strip(), status, _parse_at(data.get("at")), message_id.strip(),
                           str(error)[:40] if error is not None else "")


def parse_callback(body: bytes | str, id_field: str = "id") -> list[DeliveryReceipt]:
    """A callback body (one object or a list of them) -> receipts; ReceiptError on garbage."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
        raise ReceiptError("callback body is not JSON") from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise ReceiptError("empty callback")
    return [parse_receipt(item, id_field) for item in items]


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _error_code(body: bytes) -> str:
    """The gateway's error code/message from a 4xx body, short and printable (for the cause)."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ""
    if isinstance(data, dict):
        for key in ("code", "error_code", "error", "status"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("code")
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                return "".join(ch for ch in str(value) if ch.isprintable())[:24]
    return ""


# ---------------------------------------------------------------- driver

class HttpSmsGateway:
    """One HTTP SMS gateway; see the module doc."""

    def __init__(self, url: str, *, token: str, sender: str, callback_url: Optional[str] = None,
                 id_field: str = "id", timeout: float = 10.0, callback_secret: Optional[str] = None):
        if not url.startswith(("http://", "https://")):
            raise ValueError("gateway url must be http:// or https://")
        if not token:
            raise ValueError("gateway token is required")
        self.url, self.sender, self.callback_url = url, sender, callback_url
        self.id_field, self.timeout = id_field, timeout
        self._token = token
        self._callback_secret = callback_secret
        self._session: Optional[aiohttp.ClientSession] = None
        self._receipts: asyncio.Queue[DeliveryReceipt] = asyncio.Queue()

    def __repr__(self) -> str:          # never shows the token
        return f"HttpSmsGateway(url={self.url!r}, sender={self.sender!r}, id_field={self.id_field!r})"

    async def connect(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> "HttpSmsGateway":
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def send(self, e164: str, text: str) -> str:
        """POST the message; returns the gateway's message id. Raises SmsUnavailable /
        SmsRejected / SmsBadAnswer (see the module doc)."""
        await self.connect()
        assert self._session is not None
        payload: dict[str, Any] = {"to": e164, "text": text, "sender": self.sender}
        if self.callback_url:
            payload["callback_url"] = self.callback_url
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        try:
            async with self._session.post(self.url, json=payload, headers=headers) as resp:
                status = resp.status
                body = await resp.content.read(MAX_ANSWER)
        except asyncio.TimeoutError:
            raise SmsUnavailable(f"SMS gateway {self.url} did not answer within {self.timeout}s",
                                 cause="gateway_timeout") from None
        except aiohttp.ClientError as exc:
            raise SmsUnavailable(f"SMS gateway {self.url} unreachable: {type(exc).__name__}",
                                 cause="gateway_unreachable") from None
        if status >= 500 or status in TEMPORARY_HTTP:
            raise SmsUnavailable(f"SMS gateway {self.url} answered HTTP {status}", http_status=status,
                                 cause=f"gateway http {status}")
        if status >= 400:
            code = _error_code(body)
            raise SmsRejected(f"SMS gateway {self.url} rejected the message to {e164}: HTTP {status}"
                              + (f" {code}" if code else ""), http_status=status, code=code)
        if not 200 <= status < 300:
            raise SmsBadAnswer(f"SMS gateway {self.url} answered HTTP {status}, expected 2xx",
                               http_status=status, cause=f"gateway_bad_answer http {status}")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SmsBadAnswer(f"SMS gateway {self.url} answered HTTP {status} with a body that is not JSON "
                               f"({len(body)} bytes)", http_status=status, cause="gateway_bad_answer not_json") from None
        message_id = _dig(data, self.id_field)
        if isinstance(message_id, int) and not isinstance(message_id, bool):
            message_id = str(message_id)
        if not isinstance(message_id, str) or not message_id.strip():
            raise SmsBadAnswer(f"SMS gateway {self.url} answered without a message id in field "
                               f"{self.id_field!r}", http_status=status, cause="gateway_bad_answer no_id")
        return message_id.strip()

    # -- receipts

    def feed(self, receipt: DeliveryReceipt) -> None:
        """Queue a receipt for ``receipts()`` (the callback handler does this)."""
        self._receipts.put_nowait(receipt)

    async def receipts(self) -> AsyncIterator[DeliveryReceipt]:
        """Delivery receipts as the callback handler receives them (until cancelled)."""
        while True:
            yield await self._receipts.get()

    def _authorised(self, request: web.Request) -> bool:
        if not self._callback_secret:
            return True
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            given = request.query.get("token", "")
        return hmac.compare_digest(given.strip().encode(), self._callback_secret.encode())

    async def callback_handler(self, request: web.Request) -> web.Response:
        """aiohttp handler for the gateway's delivery callbacks: 204 when queued, 400 on
        garbage (the gateway should not retry it), 401 without the callback secret."""
        if not self._authorised(request):
            log.warning("event=sms_callback_unauthorised remote=%s", request.remote)
            return web.json_response({"error": "unauthorised"}, status=401)
        body = await request.content.read(MAX_CALLBACK)
        try:
            receipts = parse_callback(body, self.id_field)
        except ReceiptError as exc:
            log.warning("event=sms_callback_bad reason=%r", str(exc))
            return web.json_response({"error": str(exc)}, status=400)
        for receipt in receipts:
            self.feed(receipt)
        return web.Response(status=204)

    def add_callback_route(self, app: web.Application, path: str = "/sms/receipts") -> None:
        app.router.add_post(path, self.callback_handler)
