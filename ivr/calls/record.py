"""CallRecord: the state of one call as it will appear in the calls table."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ivr.ari.events import CHANNEL_RECOVERED
from models.phones import safe_text, try_normalize_phone
from models.tables import CallDirection


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_ari_time(value: str) -> datetime | None:
    """ARI timestamps look like 2026-11-23T12:30:17.485+0000."""
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        return None


# Results a call can end with; kept short and stable because reports group by them.
RESULT_DIGIT = "digit"  # the caller pressed an accepted key
RESULT_NO_INPUT = "no_input"  # nothing pressed before the timeout
RESULT_INVALID_INPUT = "invalid_input"  # only keys that mean nothing here (e.g. * #)
RESULT_CALLER_HANGUP = "caller_hangup"  # the caller hung up before choosing
RESULT_FAILED = "failed"  # Asterisk refused an operation; see notes
RESULT_ANSWERED = "answered"  # an operator took the call
RESULT_AFTER_HOURS = "after_hours"  # department closed: message + callback request
RESULT_CALLBACK = "callback_requested"  # nobody answered in time: callback request
RESULT_TRANSFERRED = "transferred"  # the operator transferred the caller elsewhere


@dataclass
class CallRecord:
    call_uid: str
    direction: CallDirection
    started_at: datetime = field(default_factory=utcnow)
    from_number: str | None = None
    from_e164: str | None = None
    caller_name: str | None = None
    to_number: str | None = None
    channel_name: str | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    result: str | None = None
    digits: str = ""
    hangup_cause: int | None = None
    hangup_by: str | None = None
    flow: str | None = None
    notes: str | None = None
    # Inbound routing (see ivr/inbound): the decision and its outcome.
    client_id: int | None = None
    rule: str | None = None
    department_code: str | None = None
    topic: str | None = None
    answered_by_operator_id: int | None = None
    wait_seconds: float | None = None
    talk_seconds: float | None = None
    degraded: bool = False

    @classmethod
    def inbound(cls, call_uid: str, *, caller_number: str, caller_name: str, to_number: str,
                channel_name: str, flow: str, created: str = "") -> "CallRecord":
        # Caller IDs are attacker-controlled: store them bounded and sanitised, and only a
        # number that really parses goes into the E.164 column used for client lookup.
        return cls(
            call_uid=call_uid,
            direction=CallDirection.inbound,
            from_number=safe_text(caller_number, 80) or None,
            from_e164=try_normalize_phone(caller_number),
            caller_name=safe_text(caller_name, 80) or None,
            to_number=safe_text(to_number, 80) or None,
            channel_name=safe_text(channel_name, 120),
            flow=flow,
            started_at=parse_ari_time(created) or utcnow(),
        )

    @classmethod
    def from_stasis_start(cls, first_event, flow: str) -> "CallRecord":
        """The record of a call entering Stasis (or adopted after a reconnect)."""
        channel = first_event.channel
        args = first_event.args
        record = cls.inbound(
            channel.id, caller_number=channel.caller_number, caller_name=channel.caller_name,
            to_number=args[1] if len(args) > 1 else channel.exten, channel_name=channel.name, flow=flow,
            created=channel.creationtime,
        )
        if first_event.type == CHANNEL_RECOVERED:
            record.add_note("adopted after controller reconnect")
        return record

    def add_note(self, text: str) -> None:
        self.notes = text if not self.notes else f"{self.notes}; {text}"

    def as_row(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        row["digits"] = (self.digits or None) and self.digits[:64]
        return row

    def to_json(self) -> dict[str, Any]:
        row = self.as_row()
        for key, value in row.items():
            if isinstance(value, datetime):
                row[key] = value.isoformat()
            elif isinstance(value, CallDirection):
                row[key] = value.value
        return row

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CallRecord":
        values = dict(data)
        for key in ("started_at", "answered_at", "ended_at"):
            if values.get(key):
                values[key] = datetime.fromisoformat(values[key])
        values["direction"] = CallDirection(values["direction"])
        values["digits"] = values.get("digits") or ""
        return cls(**values)
