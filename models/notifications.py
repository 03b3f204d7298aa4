"""Notification jobs in Postgres: creation (validated, idempotent on ``external_id``), reading,
listing and cancelling. The state machine is ivr.notify.jobs; every status change here goes
through ``transition``.

The functions take an ``AsyncConnection`` whose transaction the caller owns
(``async with engine.begin() as conn``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ivr.notify.retry import PolicySet

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from ivr.notify.jobs import CLAIMABLE_STATES, RESULT_OF_STATE, STATES, transition
from ivr.notify.templates import CLIENT_FIELDS, TemplateError, TemplateStore
from models.clients import create_potential_client
from models.phones import PhoneNumberError, normalize_phone
from models.tables import Client, ClientPhone, DoNotCall, NotificationAttempt, NotificationJob

CHANNELS = ("call", "sms", "preference")
DEFAULT_MAX_ATTEMPTS = 5
MAX_MAX_ATTEMPTS = 50
MAX_EXTERNAL_ID = 128
LIST_LIMIT = 50
MAX_LIST_LIMIT = 1000


class JobValidationError(ValueError):
    """A request field is wrong; ``field`` names it (``variables.<name>`` for a template variable)."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def as_json(self) -> dict:
        return {"field": self.field, "message": self.message}


class JobValidationErrors(ValueError):
    """Several field errors at once (request parsing reports all of them)."""

    def __init__(self, errors: list[JobValidationError]):
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


class JobNotFound(LookupError):
    def __init__(self, job_id: int):
        self.job_id = job_id
        super().__init__(f"notification job {job_id} not found")


@dataclass
class JobRequest:
    template: str
    variables: dict[str, Any] = field(default_factory=dict)
    client_id: int | None = None
    phone: str | None = None
    channel: str = "preference"
    earliest_at: datetime | None = None
    deadline_at: datetime | None = None
    external_id: str | None = None
    # None: the template's barrier from the retry policy (ivr/notify/policy.yaml).
    max_attempts: int | None = None

    @classmethod
    def from_json(cls, data: Any) -> "JobRequest":
        """A request from a decoded JSON body; type errors for every bad field at once."""
        if not isinstance(data, dict):
            raise JobValidationErrors([JobValidationError("body", "expected a JSON object")])
        errors: list[JobValidationError] = []
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                errors.append(JobValidationError(key, "unknown field"))

        def get(name: str, types: tuple, what: str, default: Any = None) -> Any:
            value = data.get(name, default)
            if value is None:
                return default
            if isinstance(value, bool) or not isinstance(value, types):
                errors.append(JobValidationError(name, f"expected {what}"))
                return default
            return value

        def when(name: str) -> datetime | None:
            value = get(name, (str,), "an ISO 8601 date-time with a UTC offset")
            if value is None:
                return None
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                errors.append(JobValidationError(name, f"not an ISO 8601 date-time: {value!r}"))
                return None
            if parsed.tzinfo is None:
                errors.append(JobValidationError(name, "needs a UTC offset (e.g. +03:00 or Z)"))
                return None
            return parsed

        template = get("template", (str,), "a template name")
        if template is None:
            errors.append(JobValidationError("template", "required"))
        request = cls(
            template=template or "",
            variables=get("variables", (dict,), "an object of variable values", {}),
            client_id=get("client_id", (int,), "an integer client id"),
            phone=get("phone", (str,), "a phone number string"),
            channel=get("channel", (str,), "one of " + ", ".join(CHANNELS), "preference"),
            earliest_at=when("earliest_at"),
            deadline_at=when("deadline_at"),
            external_id=get("external_id", (str,), "a string"),
            max_attempts=get("max_attempts", (int,), "an integer"),
        )
        if errors:
            raise JobValidationErrors(errors)
        return request


@dataclass(frozen=True)
class Job:
    id: int
    external_id: str | None
    client_id: int
    e164: str
    template: str
    variables: dict
    channel: str
    status: str
    earliest_at: datetime
    deadline_at: datetime | None
    next_attempt_at: datetime | None
    attempts_made: int
    max_attempts: int
    result: str | None
    prompt_text: str | None
    created_at: datetime
    updated_at: datetime
    claimed_by: str | None
    claimed_at: datetime | None

    @classmethod
    def from_row(cls, row) -> "Job":
        m = row._mapping
        return cls(**{f.name: m[f.name] for f in fields(cls)})

    def as_json(self) -> dict:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.isoformat() if isinstance(value, datetime) else value
        return out


_JOB_COLUMNS = [getattr(NotificationJob, f.name) for f in fields(Job)]


def _validate_static(request: JobRequest, now: datetime) -> tuple[datetime, str | None]:
    """Checks that need no database; returns (earliest_at, e164 of ``phone`` or None)."""
    if request.channel not in CHANNELS:
        raise JobValidationError("channel", f"unknown channel {request.channel!r}; one of {', '.join(CHANNELS)}")
    if request.max_attempts is not None and not (1 <= request.max_attempts <= MAX_MAX_ATTEMPTS):
        raise JobValidationError("max_attempts", f"must be between 1 and {MAX_MAX_ATTEMPTS}")
    if request.external_id is not None and not (0 < len(request.external_id) <= MAX_EXTERNAL_ID):
        raise JobValidationError("external_id", f"must be 1-{MAX_EXTERNAL_ID} characters")
    if not request.template:
        raise JobValidationError("template", "required")
    if not isinstance(request.variables, dict) or not all(isinstance(k, str) for k in request.variables):
        raise JobValidationError("variables", "expected an object of variable values")
    for name, value in (("earliest_at", request.earliest_at), ("deadline_at", request.deadline_at)):
        if value is not None and value.tzinfo is None:
            raise JobValidationError(name, "needs a time zone")
    earliest = request.earliest_at or now
    if request.deadline_at is not None:
        if request.deadline_at <= earliest:
            raise JobValidationError("deadline_at", "must be after earliest_at")
        if request.deadline_at <= now:
            raise JobValidationError("deadline_at", "already passed")
    e164 = None
    if request.phone is not None:
        try:
            e164 = normalize_phone(request.phone)
        except PhoneNumberError as exc:
            raise JobValidationError("phone", str(exc)) from None
    elif request.client_id is None:
        raise JobValidationError("phone", "give phone or client_id")
    return earliest, e164


def _barrier(template: str, policies: "PolicySet | None") -> int:
    """The template's barrier count of contacts (policy file; the shipped one by default)."""
    if policies is None:
        policies = _default_policies()
    return policies.for_template(template).barrier


@functools.lru_cache(maxsize=1)
def _default_policies() -> "PolicySet":
    from ivr.notify.retry import load_policies
    return load_policies()


async def _existing(conn: AsyncConnection, external_id: str) -> Job | None:
    row = (await conn.execute(select(*_JOB_COLUMNS).where(NotificationJob.external_id == external_id))).first()
    return Job.from_row(row) if row is not None else None


async def create_job(conn: AsyncConnection, request: JobRequest, *, templates: TemplateStore,
                     now: datetime | None = None, policies: "PolicySet | None" = None) -> tuple[Job, bool]:
    """Validate ``request`` and store a pending job; returns (job, created).

    The same ``external_id`` again returns the first job with ``created`` False, also when two
    requests race: INSERT ... ON CONFLICT (external_id) DO NOTHING waits for the other
    transaction, then the SELECT sees its row. Raises JobValidationError naming the field.
    """
    now = now or datetime.now(timezone.utc)
    earliest, e164 = _validate_static(request, now)
    if request.external_id is not None:
        existing = await _existing(conn, request.external_id)
        if existing is not None:
            return existing, False

    # the client and his number
    client = None
    if request.client_id is not None:
        client = (await conn.execute(select(Client).where(Client.id == request.client_id))).first()
        if client is None:
            raise JobValidationError("client_id", f"no client with id {request.client_id}")
        if e164 is None:
            e164 = (await conn.execute(select(ClientPhone.e164).where(ClientPhone.client_id == request.client_id)
                                       .order_by(ClientPhone.id).limit(1))).scalar()
            if e164 is None:
                raise JobValidationError("client_id", f"client {request.client_id} has no phone; give phone")
    phone_field = "phone" if request.phone is not None else "client_id"
    dnc = (await conn.execute(select(DoNotCall.reason).where(DoNotCall.e164 == e164))).first()
    if dnc is not None:
        reason = f" ({dnc.reason})" if dnc.reason else ""
        raise JobValidationError(phone_field, f"{e164} is on the do-not-call list{reason}")

    # the template and its variables (before any client card is created)
    try:
        missing = templates.check(request.template, request.variables)
    except TemplateError as exc:
        raise JobValidationError("template", str(exc)) from None
    if missing:
        raise JobValidationError(f"variables.{missing[0]}",
                                 f"template {request.template!r} needs {', '.join(missing)}")

    if client is None:
        client_id = (await conn.execute(select(ClientPhone.client_id).where(ClientPhone.e164 == e164))).scalar()
        if client_id is None:
            client_id = await create_potential_client(conn, e164, None)
        client = (await conn.execute(select(Client).where(Client.id == client_id))).first()
    card = {"address_name": client.address_name, "full_name": client.full_name, "company": client.company}
    try:
        prompt = templates.render(request.template, card, request.variables)
    except TemplateError as exc:
        if exc.field in CLIENT_FIELDS:
            # e.g. a potential client made from his number has no address_name yet
            raise JobValidationError(f"variables.{exc.field}", f"client {client.id} has no {exc.field} on his card; "
                                     f"give it in variables.{exc.field}") from None
        raise JobValidationError(f"variables.{exc.field}" if exc.field else "template", str(exc)) from None

    values = dict(
        external_id=request.external_id, client_id=client.id, e164=e164, template=request.template,
        variables=request.variables, channel=request.channel, status="pending", earliest_at=earliest,
        deadline_at=request.deadline_at, next_attempt_at=earliest,
        max_attempts=request.max_attempts or _barrier(request.template, policies),
        prompt_text=prompt.text,
    )
    stmt = pg_insert(NotificationJob).values(**values)
    if request.external_id is not None:
        stmt = stmt.on_conflict_do_nothing(index_elements=[NotificationJob.external_id])
    row = (await conn.execute(stmt.returning(*_JOB_COLUMNS))).first()
    if row is None:  # lost the race to a concurrent request with the same external_id
        existing = await _existing(conn, request.external_id)
        assert existing is not None
        return existing, False
    return Job.from_row(row), True


async def get_job(conn: AsyncConnection, job_id: int) -> Job:
    row = (await conn.execute(select(*_JOB_COLUMNS).where(NotificationJob.id == job_id))).first()
    if row is None:
        raise JobNotFound(job_id)
    return Job.from_row(row)


async def job_attempts(conn: AsyncConnection, job_id: int) -> list[dict]:
    rows = (await conn.execute(select(NotificationAttempt.__table__).where(NotificationAttempt.job_id == job_id)
                               .order_by(NotificationAttempt.attempt_no))).mappings().all()
    return [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()} for r in rows]


async def list_jobs(conn: AsyncConnection, *, status: str | None = None, limit: int = LIST_LIMIT) -> list[Job]:
    """Newest first."""
    if status is not None and status not in STATES:
        raise JobValidationError("status", f"unknown status {status!r}; one of {', '.join(STATES)}")
    if not (1 <= limit <= MAX_LIST_LIMIT):
        raise JobValidationError("limit", f"must be between 1 and {MAX_LIST_LIMIT}")
    stmt = select(*_JOB_COLUMNS).order_by(NotificationJob.id.desc()).limit(limit)
    if status is not None:
        stmt = stmt.where(NotificationJob.status == status)
    return [Job.from_row(r) for r in (await conn.execute(stmt)).all()]


async def apply_event(conn: AsyncConnection, job_id: int, event: str) -> Job:
    """Move job ``job_id`` by ``event`` (row locked; InvalidTransition when not allowed)."""
    status = (await conn.execute(select(NotificationJob.status).where(NotificationJob.id == job_id)
                                 .with_for_update())).scalar()
    if status is None:
        raise JobNotFound(job_id)
    new = transition(status, event)
    changes: dict[str, Any] = {"status": new, "updated_at": func.now()}
    if new in RESULT_OF_STATE:
        changes["result"] = RESULT_OF_STATE[new]
    if new not in CLAIMABLE_STATES:
        changes["next_attempt_at"] = None
    row = (await conn.execute(update(NotificationJob).where(NotificationJob.id == job_id).values(**changes)
                              .returning(*_JOB_COLUMNS))).first()
    return Job.from_row(row)


async def cancel_job(conn: AsyncConnection, job_id: int) -> Job:
    return await apply_event(conn, job_id, "cancel")


async def add_do_not_call(conn: AsyncConnection, phone: str, reason: str | None = None) -> str:
    e164 = normalize_phone(phone)
    await conn.execute(pg_insert(DoNotCall).values(e164=e164, reason=reason)
                       .on_conflict_do_update(index_elements=[DoNotCall.e164], set_={"reason": reason}))
    return e164


async def remove_do_not_call(conn: AsyncConnection, phone: str) -> bool:
    e164 = normalize_phone(phone)
    result = await conn.execute(DoNotCall.__table__.delete().where(DoNotCall.e164 == e164))
    return result.rowcount > 0


async def list_do_not_call(conn: AsyncConnection) -> list[tuple[str, str | None, datetime]]:
    rows = (await conn.execute(select(DoNotCall.e164, DoNotCall.reason, DoNotCall.added_at)
                               .order_by(DoNotCall.added_at))).all()
    return [tuple(r) for r in rows]
