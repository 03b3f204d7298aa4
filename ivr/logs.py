"""Structured logs: one line per event, ``key=value`` pairs, the call id on every line.

The call id lives in a context variable set when a call's task starts, so every line logged
while handling that call carries it without each call site passing it along.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time

_call_id: contextvars.ContextVar[str] = contextvars.ContextVar("call_id", default="-")


def bind_call_id(call_id: str) -> None:
    _call_id.set(call_id)


def current_call_id() -> str:
    return _call_id.get()


class _CallIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.call_id = _call_id.get()
        return True


class LogfmtFormatter(logging.Formatter):
    """``2026-11-23T12:00:00.123Z level=info logger=ivr.call call_id=... event=... k=v``."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        message = record.getMessage().replace("\n", "\\n")
        line = f"{ts} level={record.levelname.lower()} logger={record.name} call_id={getattr(record, 'call_id', '-')} {message}"
        if record.exc_info:
            # Only genuinely unexpected failures carry a traceback; keep it on one line.
            line += " traceback=" + repr(self.formatException(record.exc_info))
        return line


def setup_logging(level: str = "INFO", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    handler.addFilter(_CallIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries chatter at INFO about reconnects we already log ourselves.
    logging.getLogger("panoramisk").setLevel(logging.WARNING)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


def kv(value: object) -> str:
    """Quote a value for a logfmt line when it has spaces, quotes or '='."""
    text = str(value).replace("\n", "\\n")
    if not text or any(c in text for c in ' "='):
        return '"' + text.replace('"', '\\"') + '"'
    return text
