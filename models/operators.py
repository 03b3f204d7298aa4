"""Operators: who they are, what they chose (available / paused / logged out), what they did today.

Async SQLAlchemy Core over an ``AsyncConnection``; the caller owns the transaction
(``async with engine.begin() as conn``), so a status change and its event row commit together.
All SQL is parameterised. The CLI runs these through ``asyncio.run`` (ivr/operators/cli.py).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from models.tables import Department, Operator, OperatorEvent, OperatorStatus, Violation
from routing.distribution import OperatorView

EXTENSION_RE = re.compile(r"[0-9]{2,8}")
# Letters of any alphabet, digits, spaces and a few punctuation marks; nothing a config file
# (pjsip.conf, extensions.conf) or a terminal could take for syntax or control.
_NAME_EXTRA = " .-_'()"
REASON_MAX = 200
VIOLATION_KINDS = ("reaction", "summon")

DEFAULT_PAUSE_REASONS = {
    "feature_code": "пауза по коду",
    "cli": "пауза из консоли",
    "web": "пауза из веб-интерфейса",
    "auto": "автопауза",
}
EVENT_FOR_STATUS = {OperatorStatus.logged_out: "logout", OperatorStatus.paused: "pause"}


class OperatorError(ValueError):
    """A request about operators that cannot be carried out; the message says why."""


class UnknownOperator(OperatorError):
    pass


class UnknownDepartment(OperatorError):
    pass


@dataclass(frozen=True)
class OperatorRow:
    id: int
    name: str
    extension: str
    department: str | None
    status: OperatorStatus
    pause_reason: str | None
    status_since: datetime | None
    sip_secret: str | None = None
    sip_contact: str | None = None


@dataclass(frozen=True)
class StatusChange:
    operator_id: int
    extension: str
    name: str
    department: str | None
    previous: OperatorStatus
    status: OperatorStatus
    reason: str | None
    event: str | None        # login / logout / pause / rejoin; None when nothing changed
    at: datetime

    @property
    def changed(self) -> bool:
        return self.event is not None


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --- validation --------------------------------------------------------------------------------
def validate_extension(extension: str) -> str:
    ext = (extension or "").strip()
    if not EXTENSION_RE.fullmatch(ext):
        raise OperatorError(f"extension {extension!r}: use 2 to 8 digits")
    return ext


def validate_name(name: str) -> str:
    cleaned = " ".join((name or "").split())
    if not cleaned:
        raise OperatorError("operator name is empty")
    if len(cleaned) > 200:
        raise OperatorError("operator name is longer than 200 characters")
    bad = sorted({ch for ch in cleaned if not (ch.isalnum() or ch in _NAME_EXTRA)})
    if bad or (name and any(ord(ch) < 32 or ord(ch) == 127 for ch in name)):
        shown = ", ".join(repr(ch) for ch in bad) or "control characters"
        raise OperatorError(f"operator name {name!r}: characters not allowed: {shown} "
                            f"(letters, digits, spaces and {_NAME_EXTRA.strip()!r} only)")
    return cleaned


def clean_reason(reason: str | None) -> str | None:
    """A pause reason as stored: control characters dropped, spaces collapsed, bounded."""
    if reason is None:
        return None
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in reason).split())
    return text[:REASON_MAX] or None


# --- reading ---------------------------------------------------------------------------------
def _operator_select():
    return (select(Operator.id, Operator.name, Operator.extension, Department.code.label("department"),
                   Operator.status, Operator.pause_reason, Operator.status_since, Operator.sip_secret,
                   Operator.sip_contact)
            .select_from(Operator).outerjoin(Department, Department.id == Operator.department_id))


def _row(r) -> OperatorRow:
    return OperatorRow(id=r.id, name=r.name, extension=r.extension, department=r.department, status=r.status,
                       pause_reason=r.pause_reason, status_since=r.status_since, sip_secret=r.sip_secret,
                       sip_contact=r.sip_contact)


async def operator_by_extension(conn: AsyncConnection, extension: str) -> OperatorRow | None:
    r = (await conn.execute(_operator_select().where(Operator.extension == extension))).first()
    return _row(r) if r else None


async def list_operators(conn: AsyncConnection) -> list[OperatorRow]:
    rows = await conn.execute(_operator_select().order_by(Department.code.nulls_last(), Operator.extension))
    return [_row(r) for r in rows]


async def operators_in_department(conn: AsyncConnection, department_code: str) -> list[OperatorRow]:
    rows = await conn.execute(_operator_select().where(Department.code == department_code)
                              .order_by(Operator.extension))
    return [_row(r) for r in rows]


async def department_id(conn: AsyncConnection, code: str) -> int:
    dep = (await conn.execute(select(Department.id).where(Department.code == code))).scalar_one_or_none()
    if dep is None:
        known = (await conn.execute(select(Department.code).order_by(Department.code))).scalars().all()
        raise UnknownDepartment(f"unknown department {code!r}"
                                + (f"; known: {', '.join(known)}" if known else "; no departments yet "
                                   "(ivr routing apply creates them from the rules file)"))
    return dep


async def _require(conn: AsyncConnection, extension: str, *, for_update: bool = False) -> OperatorRow:
    q = _operator_select().where(Operator.extension == extension)
    if for_update:
        q = q.with_for_update(of=Operator)
    r = (await conn.execute(q)).first()
    if r is None:
        raise UnknownOperator(f"no operator with extension {extension!r}")
    return _row(r)


# --- writing ---------------------------------------------------------------------------------
async def add_operator(conn: AsyncConnection, name: str, extension: str, department_code: str,
                       sip_contact: str | None = None, *, cause: str = "cli") -> OperatorRow:
    """A new operator, logged in and available, with a generated SIP password."""
    name = validate_name(name)
    extension = validate_extension(extension)
    if sip_contact is not None:
        sip_contact = sip_contact.strip()
        if not re.fullmatch(r"sips?:[A-Za-z0-9._~%@:\[\]-]{1,190}", sip_contact):
            raise OperatorError(f"contact {sip_contact!r}: expected sip:host[:port] or sip:user@host[:port]")
    dep_id = await department_id(conn, department_code)
    if await operator_by_extension(conn, extension) is not None:
        raise OperatorError(f"extension {extension} is taken")
    now = utcnow()
    op_id = (await conn.execute(insert(Operator).values(
        name=name, extension=extension, department_id=dep_id, sip_secret=secrets.token_urlsafe(18),
        sip_contact=sip_contact, status=OperatorStatus.available, status_since=now,
    ).returning(Operator.id))).scalar_one()
    await record_operator_event(conn, op_id, "login", status=OperatorStatus.available, cause=cause, at=now)
    return await _require(conn, extension)


async def record_operator_event(conn: AsyncConnection, operator_id: int, event: str, *,
                                status: OperatorStatus | None = None, reason: str | None = None,
                                cause: str | None = None, call_uid: str | None = None,
                                at: datetime | None = None) -> None:
    """One line of the operator's history (ring_no_answer, ring_rejected, ... or a state change)."""
    await conn.execute(insert(OperatorEvent).values(
        operator_id=operator_id, at=at or utcnow(), event=event[:30], status=status, reason=clean_reason(reason),
        cause=cause[:30] if cause else None, call_uid=call_uid))


async def set_status(conn: AsyncConnection, extension: str, status: OperatorStatus, *, reason: str | None = None,
                     cause: str, call_uid: str | None = None, at: datetime | None = None) -> StatusChange:
    """Set what the operator chose and record the event (same transaction).

    Event: login (from logged out), logout, pause, rejoin (paused -> available). Setting the
    status he already has changes nothing and records nothing, except a pause with a different
    reason (the new reason is stored and recorded). A pause always has a reason: the given one
    or a default by cause ("пауза по коду", ...)."""
    status = OperatorStatus(status)
    current = await _require(conn, extension, for_update=True)
    now = at or utcnow()
    reason = clean_reason(reason)
    if status is OperatorStatus.paused:
        reason = reason or DEFAULT_PAUSE_REASONS.get(cause, "пауза")
    if status is current.status and (status is not OperatorStatus.paused or reason == current.pause_reason):
        return StatusChange(current.id, current.extension, current.name, current.department, current.status,
                            current.status, current.pause_reason, None, now)
    if status is OperatorStatus.available:
        event = "rejoin" if current.status is OperatorStatus.paused else "login"
    else:
        event = EVENT_FOR_STATUS[status]
    values = {"status": status, "pause_reason": reason if status is OperatorStatus.paused else None}
    if status is not current.status:
        values["status_since"] = now
    await conn.execute(update(Operator).where(Operator.id == current.id).values(**values))
    await record_operator_event(conn, current.id, event, status=status, reason=reason, cause=cause,
                                call_uid=call_uid, at=now)
    return StatusChange(current.id, current.extension, current.name, current.department, current.status, status,
                        values["pause_reason"], event, now)


async def toggle_pause(conn: AsyncConnection, extension: str, *, cause: str, reason: str | None = None,
                       at: datetime | None = None) -> StatusChange:
    """The pause feature code: paused -> available (rejoin); available -> paused; a logged-out
    operator is logged in (available)."""
    current = await _require(conn, extension, for_update=True)
    if current.status is OperatorStatus.available:
        return await set_status(conn, extension, OperatorStatus.paused, reason=reason, cause=cause, at=at)
    return await set_status(conn, extension, OperatorStatus.available, cause=cause, at=at)


async def record_violation(conn: AsyncConnection, operator_id: int, call_uid: str | None, kind: str,
                           standard_seconds: float, delay_seconds: float, note: str | None = None,
                           at: datetime | None = None) -> int:
    """A breach of the reaction standard (kind: reaction / summon). Returns the row id."""
    if kind not in VIOLATION_KINDS:
        raise OperatorError(f"violation kind {kind!r}: use one of {', '.join(VIOLATION_KINDS)}")
    return (await conn.execute(insert(Violation).values(
        operator_id=operator_id, call_uid=call_uid, kind=kind, standard_seconds=float(standard_seconds),
        delay_seconds=float(delay_seconds), at=at or utcnow(), note=note,
    ).returning(Violation.id))).scalar_one()


async def operator_events(conn: AsyncConnection, extension: str, *, since: datetime | None = None,
                          limit: int = 200) -> list:
    """The operator's history, oldest first: rows with at, event, status, reason, cause, call_uid."""
    op = await _require(conn, extension)
    q = (select(OperatorEvent.at, OperatorEvent.event, OperatorEvent.status, OperatorEvent.reason,
                OperatorEvent.cause, OperatorEvent.call_uid)
         .where(OperatorEvent.operator_id == op.id))
    if since is not None:
        q = q.where(OperatorEvent.at >= since)
    rows = (await conn.execute(q.order_by(OperatorEvent.at.desc(), OperatorEvent.id.desc()).limit(limit))).all()
    return list(reversed(rows))


# --- distribution input ------------------------------------------------------------------------
# Per operator of the department, today's attempts through the (operator_id, started_at) index
# (a LATERAL subquery), so the cost does not grow with the call history. Built once.
_DEPARTMENT_VIEWS = text("""
SELECT o.id, o.extension, o.name, d.code AS department, o.status, o.status_since,
       s.offers, s.calls, s.talk, s.last_offer_at, s.last_call_end_at,
       CASE WHEN s.last_call_end_at IS NOT NULL
            THEN s.last_call_end_at + d.wrapup_seconds * interval '1 second' END AS wrapup_until
FROM operators o
JOIN departments d ON d.id = o.department_id AND d.code = :code
CROSS JOIN LATERAL (
    SELECT count(*) AS offers,
           count(*) FILTER (WHERE a.outcome = 'answered') AS calls,
           coalesce(sum(a.talk_seconds) FILTER (WHERE a.outcome = 'answered'), 0.0) AS talk,
           max(a.started_at) AS last_offer_at,
           max(coalesce(a.ended_at, a.answered_at)) FILTER (WHERE a.outcome = 'answered') AS last_call_end_at
    FROM call_attempts a
    WHERE a.operator_id = o.id AND a.started_at >= :day_start
) s
ORDER BY o.extension
""")


async def department_views(conn: AsyncConnection, department_code: str, *, day_start: datetime) -> list[OperatorView]:
    """Every operator of the department with today's statistics from call_attempts since
    ``day_start``, in one query. ``busy`` is False: the controller lays its live state over it.
    ``wrapup_until`` is the end of his last answered call plus the department's wrap-up, so a
    restarted controller still honours it."""
    rows = await conn.execute(_DEPARTMENT_VIEWS, {"code": department_code, "day_start": day_start})
    return [OperatorView(
        id=r.id, extension=r.extension, name=r.name, department=r.department,
        status=OperatorStatus(r.status).value, busy=False,
        wrapup_until=r.wrapup_until, last_offer_at=r.last_offer_at, last_call_end_at=r.last_call_end_at,
        calls_today=int(r.calls), offers_today=int(r.offers), talk_seconds_today=float(r.talk),
        status_since=r.status_since,
    ) for r in rows]
