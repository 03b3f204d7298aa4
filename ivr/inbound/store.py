"""InboundStore: the one adapter between inbound call flows and Postgres.

Every method is bounded by a short timeout and raises StoreUnavailable on any database
failure, so a flow can fail open (route to the default department, keep ringing operators from
the last known list) instead of hanging or crashing when the database dies mid-call.
All SQL is parameterised (SQLAlchemy Core).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from ivr.calls.record import utcnow
from models.tables import CallAttempt, CallbackRequest, CallDirection, Operator, OperatorStatus, Summon

log = logging.getLogger("ivr.inbound.store")


class StoreUnavailable(RuntimeError):
    """The database did not answer in time or failed; the caller decides how to degrade."""


class InboundStore:
    def __init__(self, engine: AsyncEngine, *, timeout: float = 2.0):
        self.engine = engine
        self.timeout = timeout

    async def _run(self, what: str, fn, *, write: bool = True) -> Any:
        # Reads run on an AUTOCOMMIT connection (no BEGIN/ROLLBACK round trips) and the pool does
        # not ping per checkout (a round trip on every call); a connection the server dropped is
        # retried once on a fresh one instead (measured: docs/benchmarks.md, routing decision).
        try:
            async with asyncio.timeout(self.timeout):
                for attempt in (1, 2):
                    try:
                        if write:
                            async with self.engine.begin() as conn:
                                return await fn(conn)
                        async with self.engine.connect() as conn:
                            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                            return await fn(conn)
                    except DBAPIError as exc:
                        if attempt == 2 or not exc.connection_invalidated:
                            raise
                        log.info("event=db_connection_dropped action=retry what=%s", what)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise StoreUnavailable(f"{what}: {reason}") from None

    # --- routing inputs ------------------------------------------------------------------
    async def caller_facts(self, e164: str | None, *, active_sales_department: str, first_deal_threshold: int):
        from models.clients import caller_facts

        return await self._run("caller lookup", lambda conn: caller_facts(
            conn, e164, active_sales_department=active_sales_department,
            first_deal_threshold=first_deal_threshold), write=False)

    async def create_potential_client(self, e164: str, caller_name: str | None) -> int:
        from models.clients import create_potential_client

        return await self._run("create client", lambda conn: create_potential_client(conn, e164, caller_name))

    async def ruleset_version(self) -> int | None:
        from routing.store import active_version

        return await self._run("ruleset version", active_version, write=False)

    async def load_ruleset(self):
        from routing.store import load_active_ruleset

        return await self._run("ruleset", load_active_ruleset, write=False)

    async def department_views(self, department: str, day_start: datetime):
        from models.operators import department_views

        return await self._run("operators", lambda conn: department_views(conn, department, day_start=day_start),
                               write=False)

    async def operator(self, extension: str):
        """(id, name, extension, department code, status) or None."""
        from models.tables import Department

        async def q(conn):
            row = (await conn.execute(
                select(Operator.id, Operator.name, Operator.extension, Department.code.label("department"),
                       Operator.status)
                .select_from(Operator).outerjoin(Department, Department.id == Operator.department_id)
                .where(Operator.extension == extension))).first()
            return row
        return await self._run("operator", q, write=False)

    # --- operator state ------------------------------------------------------------------
    async def set_status(self, extension: str, status: OperatorStatus, *, reason: str | None, cause: str,
                         call_uid: str | None = None):
        from models.operators import set_status

        return await self._run("operator status", lambda conn: set_status(
            conn, extension, status, reason=reason, cause=cause, call_uid=call_uid))

    async def toggle_pause(self, extension: str, *, cause: str):
        from models.operators import toggle_pause

        return await self._run("pause toggle", lambda conn: toggle_pause(conn, extension, cause=cause))

    async def record_operator_event(self, operator_id: int, event: str, *, reason: str | None = None,
                                    cause: str | None = None, call_uid: str | None = None) -> None:
        from models.operators import record_operator_event

        await self._run("operator event", lambda conn: record_operator_event(
            conn, operator_id, event, reason=reason, cause=cause, call_uid=call_uid))

    async def record_violation(self, operator_id: int, call_uid: str | None, kind: str, standard: float,
                               delay: float, note: str | None = None) -> None:
        from models.operators import record_violation

        await self._run("violation", lambda conn: record_violation(
            conn, operator_id, call_uid, kind, standard, delay, note=note))

    # --- the decision trail --------------------------------------------------------------
    async def start_attempt(self, *, call_uid: str, operator_id: int | None, extension: str, step: str,
                            department: str | None, started_at: datetime) -> int:
        async def q(conn):
            return (await conn.execute(insert(CallAttempt).values(
                call_uid=call_uid, operator_id=operator_id, extension=extension, step=step,
                department_code=department, started_at=started_at).returning(CallAttempt.id))).scalar_one()
        return await self._run("attempt", q)

    async def finish_attempt(self, attempt_id: int, *, outcome: str, hangup_cause: int | None = None,
                             answered_at: datetime | None = None, ended_at: datetime | None = None,
                             talk_seconds: float | None = None) -> None:
        values: dict[str, Any] = {"outcome": outcome, "ended_at": ended_at or utcnow()}
        if hangup_cause is not None:
            values["hangup_cause"] = hangup_cause
        if answered_at is not None:
            values["answered_at"] = answered_at
        if talk_seconds is not None:
            values["talk_seconds"] = talk_seconds
        await self._run("attempt", lambda conn: conn.execute(
            update(CallAttempt).where(CallAttempt.id == attempt_id).values(**values)))

    async def update_attempt(self, attempt_id: int, **values: Any) -> None:
        await self._run("attempt", lambda conn: conn.execute(
            update(CallAttempt).where(CallAttempt.id == attempt_id).values(**values)))

    async def request_callback(self, *, e164: str | None, raw_number: str | None, client_id: int | None,
                               call_uid: str, department: str | None, reason: str) -> int:
        """One open request per number: a repeated call bumps ``requests`` instead of adding a row."""
        async def q(conn):
            if e164:
                row = (await conn.execute(text(
                    "INSERT INTO callback_requests (e164, raw_number, client_id, call_uid, department_code, reason) "
                    "VALUES (:e164, :raw, :client, :uid, :dept, :reason) "
                    "ON CONFLICT (e164) WHERE status = 'open' AND e164 IS NOT NULL DO UPDATE SET "
                    "requests = callback_requests.requests + 1, updated_at = now(), call_uid = EXCLUDED.call_uid, "
                    "reason = EXCLUDED.reason, department_code = EXCLUDED.department_code RETURNING id"),
                    dict(e164=e164, raw=raw_number, client=client_id, uid=call_uid, dept=department,
                         reason=reason))).scalar_one()
                return row
            return (await conn.execute(insert(CallbackRequest).values(
                e164=None, raw_number=raw_number, client_id=client_id, call_uid=call_uid,
                department_code=department, reason=reason).returning(CallbackRequest.id))).scalar_one()
        return await self._run("callback request", q)

    async def record_contact(self, *, client_id: int, operator_id: int | None, at: datetime, call_uid: str,
                             result: str, direction: CallDirection = CallDirection.inbound) -> None:
        from models.clients import record_contact

        await self._run("contact", lambda conn: record_contact(
            conn, client_id, operator_id, direction, at, call_uid, result))

    async def last_caller(self, operator_id: int):
        """The newest inbound call to the public number that this operator answered or was
        offered (rung for, transfers included), with a number that parsed:
        (call_uid, from_e164, client_id) or None. The number comes from the calls table only,
        never from what a phone sends."""
        async def q(conn):
            # Every ring of an operator (answered or not) is an attempt row: the newest one of
            # his on a routed call with a usable number (index ix_call_attempts_operator_started).
            return (await conn.execute(text(
                "SELECT c.call_uid, c.from_e164, c.client_id FROM call_attempts a "
                "JOIN calls c ON c.call_uid = a.call_uid "
                "WHERE a.operator_id = :op AND c.direction = 'inbound' AND c.flow = 'inbound' "
                "AND c.from_e164 IS NOT NULL ORDER BY a.started_at DESC LIMIT 1"), dict(op=operator_id))).first()
        return await self._run("last caller", q, write=False)

    # --- summons -------------------------------------------------------------------------
    async def start_summon(self, *, call_uid: str, consultant_id: int | None, started_at: datetime) -> int:
        async def q(conn):
            return (await conn.execute(insert(Summon).values(
                call_uid=call_uid, consultant_id=consultant_id, started_at=started_at)
                .returning(Summon.id))).scalar_one()
        return await self._run("summon", q)

    async def update_summon(self, summon_id: int, **values: Any) -> None:
        await self._run("summon", lambda conn: conn.execute(
            update(Summon).where(Summon.id == summon_id).values(**values)))

    async def confirm_summon(self, manager_id: int, at: datetime) -> int | None:
        """Mark the manager's pending summon confirmed; returns its id or None."""
        async def q(conn):
            return (await conn.execute(
                update(Summon).where(Summon.manager_id == manager_id, Summon.outcome == "pending")
                .values(outcome="confirmed", confirmed_at=at).returning(Summon.id))).scalars().first()
        return await self._run("summon", q)

    async def summon(self, summon_id: int):
        async def q(conn):
            return (await conn.execute(select(Summon).where(Summon.id == summon_id))).first()
        return await self._run("summon", q, write=False)

    async def pending_summons(self):
        async def q(conn):
            return (await conn.execute(select(Summon.id, Summon.deadline_at).where(
                Summon.outcome == "pending", Summon.deadline_at.is_not(None)))).all()
        return await self._run("summons", q, write=False)

    async def miss_summon(self, summon_id: int, *, standard: float) -> tuple[int, int | None] | None:
        """Pending -> missed (once: concurrent timers cannot both fire); returns (manager, consultant)."""
        async def q(conn):
            row = (await conn.execute(
                update(Summon).where(Summon.id == summon_id, Summon.outcome == "pending")
                .values(outcome="missed").returning(Summon.manager_id, Summon.consultant_id,
                                                     Summon.started_at, Summon.call_uid))).first()
            if row is None or row.manager_id is None:
                return None
            from models.tables import Violation
            delay = (utcnow() - row.started_at).total_seconds()
            await conn.execute(insert(Violation).values(
                operator_id=row.manager_id, call_uid=row.call_uid, kind="summon", standard_seconds=standard,
                delay_seconds=delay, note="did not confirm arrival on the sales floor"))
            return row.manager_id, row.consultant_id
        return await self._run("summon", q)


def day_start(now: datetime, tz_name: str = "Europe/Moscow") -> datetime:
    """Midnight of ``now``'s day in the department's timezone ("today" for workload stats)."""
    from zoneinfo import ZoneInfo

    local = now.astimezone(ZoneInfo(tz_name))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)

