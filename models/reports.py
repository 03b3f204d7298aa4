"""Report queries: violations of the reaction standard, the inbound call log with who was tried.

Async SQLAlchemy Core over an ``AsyncConnection``, parameterised; ivr/reports/cli.py prints them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, literal, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection

from models.tables import Call, CallAttempt, CallDirection, Client, Operator, Violation


@dataclass(frozen=True)
class ViolationLine:
    at: datetime
    operator: str
    extension: str
    kind: str
    standard_seconds: float
    delay_seconds: float
    call_uid: str | None
    note: str | None


@dataclass(frozen=True)
class CallLine:
    call_uid: str
    started_at: datetime
    from_number: str | None
    client_name: str | None
    rule: str | None
    department: str | None
    tried: str                      # "201 no_answer, 105 answered" in ring order; "" when nobody
    answered_by: str | None         # "105 Иванов"
    wait_seconds: float | None
    talk_seconds: float | None
    result: str | None


async def violations(conn: AsyncConnection, since: datetime, until: datetime | None = None) -> list[ViolationLine]:
    """Violations with ``since <= at < until``, oldest first."""
    q = (select(Violation.at, Operator.name, Operator.extension, Violation.kind, Violation.standard_seconds,
                Violation.delay_seconds, Violation.call_uid, Violation.note)
         .join(Operator, Operator.id == Violation.operator_id)
         .where(Violation.at >= since))
    if until is not None:
        q = q.where(Violation.at < until)
    rows = await conn.execute(q.order_by(Violation.at, Violation.id))
    return [ViolationLine(r.at, r.name, r.extension, r.kind, r.standard_seconds, r.delay_seconds, r.call_uid, r.note)
            for r in rows]


async def inbound_calls(conn: AsyncConnection, since: datetime, until: datetime | None = None,
                        limit: int = 1000) -> list[CallLine]:
    """Inbound calls started in ``[since, until)``, oldest first, each with the operators rung
    for it and their outcomes (one query)."""
    a = CallAttempt
    tried = (
        select(func.string_agg(a.extension + literal(" ") + func.coalesce(a.outcome, "ringing"),
                               aggregate_order_by(literal(", "), a.started_at, a.id)))
        .where(a.call_uid == Call.call_uid)
        .scalar_subquery()
    )
    answerer = Operator.__table__.alias("answerer")
    q = (select(Call.call_uid, Call.started_at, Call.from_number, Client.full_name, Call.rule, Call.department_code,
                tried.label("tried"), answerer.c.extension.label("ans_ext"), answerer.c.name.label("ans_name"),
                Call.wait_seconds, Call.talk_seconds, Call.result)
         .select_from(Call)
         .outerjoin(Client, Client.id == Call.client_id)
         .outerjoin(answerer, answerer.c.id == Call.answered_by_operator_id)
         .where(Call.direction == CallDirection.inbound, Call.started_at >= since))
    if until is not None:
        q = q.where(Call.started_at < until)
    rows = await conn.execute(q.order_by(Call.started_at, Call.id).limit(limit))
    return [CallLine(
        call_uid=r.call_uid, started_at=r.started_at, from_number=r.from_number, client_name=r.full_name,
        rule=r.rule, department=r.department_code, tried=r.tried or "",
        answered_by=f"{r.ans_ext} {r.ans_name}" if r.ans_ext else None,
        wait_seconds=r.wait_seconds, talk_seconds=r.talk_seconds, result=r.result,
    ) for r in rows]
