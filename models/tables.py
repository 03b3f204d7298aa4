"""The schema: client store (clients, phones), organisation (departments, operators), calls.

Phones are stored in E.164 only (see models.phones) so ``8 (916) 123-45-67`` and
``+7 916 123 45 67`` find the same client. Every change to these classes needs an Alembic
revision in models/migrations/versions.
"""

from __future__ import annotations

import enum
from datetime import datetime

from decimal import Decimal

from sqlalchemy import (
    BigInteger, Boolean, CheckConstraint, DateTime, Enum, Float, ForeignKey, Index, Integer, MetaData, Numeric,
    String, Text, func, text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class CallDirection(str, enum.Enum):
    inbound = "inbound"
    outbound = "outbound"
    internal = "internal"


class Department(Base):
    """A floor of operators. Its routing settings (strategy, hours, ...) come from the routing
    rules file (routing/rules.yaml) on ``ivr routing apply``; the columns mirror it so reports and
    the controller can read them without parsing YAML."""

    __tablename__ = "departments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    strategy: Mapped[str] = mapped_column(String(20), server_default="longest_idle")
    ring_timeout: Mapped[int] = mapped_column(Integer, server_default="15")
    wrapup_seconds: Mapped[int] = mapped_column(Integer, server_default="10")
    timezone: Mapped[str] = mapped_column(String(64), server_default="Europe/Moscow")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    operators: Mapped[list["Operator"]] = relationship(back_populates="department")

    __table_args__ = (CheckConstraint("code ~ '^[a-z][a-z0-9_]{0,39}$'", name="code_format"),)


class OperatorStatus(str, enum.Enum):
    """What the operator chose (persisted). Ringing / on a call / wrap-up are live states the
    controller tracks from Asterisk, not stored here."""

    logged_out = "logged_out"
    available = "available"
    paused = "paused"


class Operator(Base):
    __tablename__ = "operators"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    extension: Mapped[str] = mapped_column(String(20), unique=True)
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id", ondelete="SET NULL"))
    # SIP password of the operator's phone (generated; never a default). NULL: no endpoint yet.
    sip_secret: Mapped[str | None] = mapped_column(String(64))
    # Static contact (sip:host:port) for phones that do not register (test phones, gateways).
    sip_contact: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[OperatorStatus] = mapped_column(
        Enum(OperatorStatus, name="operator_status"), server_default=OperatorStatus.available.value)
    pause_reason: Mapped[str | None] = mapped_column(String(200))
    status_since: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    department: Mapped[Department | None] = relationship(back_populates="operators")

    __table_args__ = (CheckConstraint("extension ~ '^[0-9]{2,8}$'", name="extension_digits"),)


class OperatorEvent(Base):
    """Every change of an operator's state, with time and cause (auto-pause, feature code, CLI,
    web). Pause reasons are kept here for good, not only the current one."""

    __tablename__ = "operator_events"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # login / logout / pause / rejoin / ring_no_answer / ...
    event: Mapped[str] = mapped_column(String(30))
    status: Mapped[OperatorStatus | None] = mapped_column(Enum(OperatorStatus, name="operator_status"))
    reason: Mapped[str | None] = mapped_column(String(200))
    # auto / feature_code / cli / web / import
    cause: Mapped[str | None] = mapped_column(String(30))
    call_uid: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_operator_events_operator_at", "operator_id", "at"),)


class Client(Base):
    __tablename__ = "clients"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The accounting system's id: re-importing its export updates the same row.
    external_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(300))
    # How the robot and operators address him: "Пётр Николаевич".
    address_name: Mapped[str | None] = mapped_column(String(200))
    company: Mapped[str | None] = mapped_column(String(300))
    # retail / small_wholesale / wholesale / large_wholesale (NULL: not known yet).
    segment: Mapped[str | None] = mapped_column(String(30))
    # potential (no deal yet) / client / lost ...
    stage: Mapped[str] = mapped_column(String(30), server_default="potential")
    deals_count: Mapped[int] = mapped_column(Integer, server_default="0")
    assigned_operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id", ondelete="SET NULL"))
    timezone: Mapped[str | None] = mapped_column(String(64))
    # call / sms: how he wants to be notified by the robot.
    notify_channel: Mapped[str] = mapped_column(String(10), server_default="call")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    phones: Mapped[list["ClientPhone"]] = relationship(back_populates="client", cascade="all, delete-orphan")
    assigned_operator: Mapped[Operator | None] = relationship(foreign_keys=[assigned_operator_id])
    department: Mapped[Department | None] = relationship(foreign_keys=[department_id])

    __table_args__ = (
        CheckConstraint("segment IS NULL OR segment IN ('retail', 'small_wholesale', 'wholesale', 'large_wholesale')",
                        name="segment_known"),
        CheckConstraint("notify_channel IN ('call', 'sms')", name="notify_channel_known"),
        CheckConstraint("deals_count >= 0", name="deals_count_positive"),
    )


class Deal(Base):
    __tablename__ = "deals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    amount: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))


class Contact(Base):
    """The contact history of a client: calls both ways (inbound answered by an operator,
    outbound placed by a manager or the robot), imported or recorded by the controller.
    The active-sales rule reads the latest outbound contact by an active-sales manager."""

    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))
    direction: Mapped[CallDirection] = mapped_column(Enum(CallDirection, name="call_direction"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    call_uid: Mapped[str | None] = mapped_column(String(64))
    result: Mapped[str | None] = mapped_column(String(40))
    note: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_contacts_client_at", "client_id", "at"),)


class ClientPhone(Base):
    __tablename__ = "client_phones"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    e164: Mapped[str] = mapped_column(String(16), unique=True)
    label: Mapped[str | None] = mapped_column(String(40))

    client: Mapped[Client] = relationship(back_populates="phones")

    __table_args__ = (CheckConstraint("e164 ~ '^\\+[1-9][0-9]{6,14}$'", name="e164_format"),)


class Call(Base):
    """One row per call; written at start and completed at the end (upsert on call_uid)."""

    __tablename__ = "calls"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    call_uid: Mapped[str] = mapped_column(String(64), unique=True)
    direction: Mapped[CallDirection] = mapped_column(Enum(CallDirection, name="call_direction"))
    # Raw numbers as signalled (sanitised, bounded) and the E.164 form when it parses.
    from_number: Mapped[str | None] = mapped_column(String(80))
    from_e164: Mapped[str | None] = mapped_column(String(16), index=True)
    caller_name: Mapped[str | None] = mapped_column(String(80))
    to_number: Mapped[str | None] = mapped_column(String(80))
    client_id: Mapped[int | None] = mapped_column(ForeignKey("clients.id", ondelete="SET NULL"))
    channel_name: Mapped[str | None] = mapped_column(String(120))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result: Mapped[str | None] = mapped_column(String(40))
    digits: Mapped[str | None] = mapped_column(String(64))
    hangup_cause: Mapped[int | None] = mapped_column(Integer)
    hangup_by: Mapped[str | None] = mapped_column(String(20))
    flow: Mapped[str | None] = mapped_column(String(40))
    notes: Mapped[str | None] = mapped_column(Text)
    # Routing decision (inbound): the rule that fired, the department, the topic chosen in the
    # menu, who answered, and whether the decision was made without the database (degraded).
    rule: Mapped[str | None] = mapped_column(String(80))
    department_code: Mapped[str | None] = mapped_column(String(40))
    topic: Mapped[str | None] = mapped_column(String(40))
    answered_by_operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))
    wait_seconds: Mapped[float | None] = mapped_column(Float)
    talk_seconds: Mapped[float | None] = mapped_column(Float)
    degraded: Mapped[bool] = mapped_column(Boolean, server_default="false")

    __table_args__ = (
        Index("ix_calls_started_at", "started_at"),
        # the wallboard (migration 0009): calls still open, and a department's day
        Index("ix_calls_open_started", "started_at", postgresql_where=text("ended_at IS NULL")),
        Index("ix_calls_department_started", "department_code", "started_at"),
    )


class CallAttempt(Base):
    """One ring of one operator for one call: the decision trail and the workload statistics
    (calls and talk time today, last offer) come from these rows."""

    __tablename__ = "call_attempts"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    call_uid: Mapped[str] = mapped_column(String(64), index=True)
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))
    extension: Mapped[str] = mapped_column(String(20))
    # assigned / active_sales / department / fallback / summon
    step: Mapped[str] = mapped_column(String(20))
    department_code: Mapped[str | None] = mapped_column(String(40))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # answered / no_answer / busy / rejected / failed / caller_hung_up / cancelled
    outcome: Mapped[str | None] = mapped_column(String(20))
    hangup_cause: Mapped[int | None] = mapped_column(Integer)
    talk_seconds: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index("ix_call_attempts_operator_started", "operator_id", "started_at"),)


class Violation(Base):
    """A breach of the reaction standard: the manager did not react within ``standard_seconds``."""

    __tablename__ = "violations"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"))
    call_uid: Mapped[str | None] = mapped_column(String(64))
    # reaction (assigned manager did not pick up) / summon (did not come to the sales floor)
    kind: Mapped[str] = mapped_column(String(20))
    standard_seconds: Mapped[float] = mapped_column(Float)
    delay_seconds: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    note: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_violations_at", "at"),)


class CallbackRequest(Base):
    """A caller to be called back (after hours, everyone busy, escalation exhausted).
    At most one open request per number: a second call updates it instead of duplicating."""

    __tablename__ = "callback_requests"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    e164: Mapped[str | None] = mapped_column(String(16))
    raw_number: Mapped[str | None] = mapped_column(String(80))
    client_id: Mapped[int | None] = mapped_column(ForeignKey("clients.id", ondelete="SET NULL"))
    call_uid: Mapped[str | None] = mapped_column(String(64))
    department_code: Mapped[str | None] = mapped_column(String(40))
    # after_hours / all_busy / escalation_exhausted
    reason: Mapped[str] = mapped_column(String(30))
    status: Mapped[str] = mapped_column(String(20), server_default="open")
    requests: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("uq_callback_requests_open_e164", "e164", unique=True,
              postgresql_where=text("status = 'open' AND e164 IS NOT NULL")),
    )


class Summon(Base):
    """A retail consultant summoned a current-sales manager to the sales floor."""

    __tablename__ = "summons"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    call_uid: Mapped[str] = mapped_column(String(64))
    consultant_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))
    manager_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # pending / confirmed / missed / no_manager / declined
    outcome: Mapped[str] = mapped_column(String(20), server_default="pending")


class RulesetVersion(Base):
    """Every applied routing rules file, kept whole; the newest active one is in force."""

    __tablename__ = "ruleset_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    parsed: Mapped[dict] = mapped_column(JSONB)
    applied_by: Mapped[str | None] = mapped_column(String(80))
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    active: Mapped[bool] = mapped_column(Boolean, server_default="true")


# --- outbound notifications (issue 4) ----------------------------------------------------------
from sqlalchemy import UniqueConstraint  # noqa: E402  (kept with the classes that use it)

# The job states and results are plain strings held to their sets by CHECK constraints (the state
# machine itself lives in ivr.notify.jobs; these tuples are its vocabulary).
NOTIFY_JOB_STATES = ("pending", "scheduled", "dialing", "sent", "confirmed", "not_received", "delivered",
                     "callback", "handed_over", "no_action", "exhausted", "expired", "cancelled", "failed")
NOTIFY_RESULTS = ("confirmed", "not_received", "delivered", "callback", "handed_over", "no_action", "exhausted",
                  "expired", "cancelled", "failed")
NOTIFY_CHANNELS = ("call", "sms", "preference")
# sent: an SMS the SMSC accepted, waiting for its delivery receipt.
NOTIFY_ATTEMPT_STATES = ("dialing", "ringing", "answered", "sent", "done", "failed")


def _in_list(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class NotificationJob(Base):
    """One request to notify a client (a call or an SMS, retried until the barrier
    ``max_attempts`` or a final result). ``external_id`` is the CRM's key: creating the same id
    twice returns the first job. ``prompt_text`` is rendered once, at creation."""

    __tablename__ = "notification_jobs"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    external_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    e164: Mapped[str] = mapped_column(String(16))
    template: Mapped[str] = mapped_column(String(100))
    variables: Mapped[dict] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # call / sms / preference (the client's notify_channel, resolved when the job is worked on)
    channel: Mapped[str] = mapped_column(String(12), server_default="preference")
    status: Mapped[str] = mapped_column(String(20), server_default="pending")
    earliest_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts_made: Mapped[int] = mapped_column(Integer, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, server_default="5")
    result: Mapped[str | None] = mapped_column(String(20))
    prompt_text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    claimed_by: Mapped[str | None] = mapped_column(String(80))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # speech dialog: the time he agreed to be called back at
    callback_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    attempts: Mapped[list["NotificationAttempt"]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="NotificationAttempt.attempt_no")

    __table_args__ = (
        CheckConstraint(_in_list("status", NOTIFY_JOB_STATES), name="status_known"),
        CheckConstraint("result IS NULL OR " + _in_list("result", NOTIFY_RESULTS), name="result_known"),
        CheckConstraint(_in_list("channel", NOTIFY_CHANNELS), name="channel_known"),
        CheckConstraint("e164 ~ '^\\+[1-9][0-9]{6,14}$'", name="e164_format"),
        CheckConstraint("max_attempts >= 1", name="max_attempts_positive"),
        CheckConstraint("attempts_made >= 0", name="attempts_made_positive"),
        CheckConstraint("deadline_at IS NULL OR deadline_at > earliest_at", name="deadline_after_earliest"),
        # The dialers' claim query: due jobs in a claimable state, by time.
        Index("ix_notification_jobs_due", "status", "next_attempt_at",
              postgresql_where=text("status IN ('pending', 'scheduled')")),
    )


class NotificationAttempt(Base):
    """One contact attempt (a call or an SMS) of a job. Committed *before* the originate, unique
    per (job, attempt_no): a dialer restarted after a crash finds it and never repeats it."""

    __tablename__ = "notification_attempts"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("notification_jobs.id", ondelete="CASCADE"))
    attempt_no: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(10))
    state: Mapped[str] = mapped_column(String(20), server_default="dialing")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # busy / no_answer / congestion / failure / hangup_during_prompt / confirmed / not_received / ...
    cause: Mapped[str | None] = mapped_column(String(40))
    hangup_cause: Mapped[int | None] = mapped_column(Integer)
    digits: Mapped[str | None] = mapped_column(String(64))
    prompt_text: Mapped[str | None] = mapped_column(Text)
    channel_id: Mapped[str | None] = mapped_column(String(120))
    sms_message_id: Mapped[str | None] = mapped_column(String(120))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    job: Mapped[NotificationJob] = relationship(back_populates="attempts")

    __table_args__ = (
        UniqueConstraint("job_id", "attempt_no", name="uq_notification_attempts_job_attempt"),
        CheckConstraint("channel IN ('call', 'sms')", name="channel_known"),
        CheckConstraint(_in_list("state", NOTIFY_ATTEMPT_STATES), name="state_known"),
        CheckConstraint("attempt_no >= 1", name="attempt_no_positive"),
        Index("ix_notification_attempts_sms_message_id", "sms_message_id",
              postgresql_where=text("sms_message_id IS NOT NULL")),
    )


class DoNotCall(Base):
    """Numbers the robot must never contact (E.164)."""

    __tablename__ = "do_not_call"
    e164: Mapped[str] = mapped_column(String(16), primary_key=True)
    reason: Mapped[str | None] = mapped_column(String(200))
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (CheckConstraint("e164 ~ '^\\+[1-9][0-9]{6,14}$'", name="e164_format"),)


class WebhookDelivery(Base):
    """The CRM webhook outbox: one row per job that reached a final status, written in the same
    transaction as that status, delivered by a sender with backoff (ivr/notify/webhook.py).
    A receiver that is down only delays its rows; nothing else waits for it."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("notification_jobs.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    next_try_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    tries: Mapped[int] = mapped_column(Integer, server_default="0")
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(String(300))

    __table_args__ = (
        UniqueConstraint("job_id", "event", name="uq_webhook_deliveries_job_event"),
        Index("ix_webhook_deliveries_due", "next_try_at", postgresql_where=text("delivered_at IS NULL")),
    )


class ManagerTask(Base):
    """Something a manager must do about a client, raised by the robot (the client said the
    documents did not arrive; a speech answer stayed unclear). Shown in the client card."""

    __tablename__ = "manager_tasks"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("notification_jobs.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(40))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))   # e.g. the agreed callback time

    __table_args__ = (
        UniqueConstraint("job_id", "kind", name="uq_manager_tasks_job_kind"),
        Index("ix_manager_tasks_open", "operator_id", postgresql_where=text("done_at IS NULL")),
    )


# --- dialplan versions (issue 6) -----------------------------------------------------------------

class DialplanVersion(Base):
    """Every `ivr dialplan apply` / `rollback` to an Asterisk instance: the full rendered file
    set (ARI/AMI secrets as placeholders), the diff against what was live (secrets masked), who
    and when. ``outcome`` 'rolled_back': the smoke check failed and the previous files were put
    back; ``active`` marks the version in force on its instance."""

    __tablename__ = "dialplan_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance: Mapped[str] = mapped_column(String(64))
    applied_by: Mapped[str | None] = mapped_column(String(80))
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    outcome: Mapped[str] = mapped_column(String(20))
    active: Mapped[bool] = mapped_column(Boolean, server_default="false")
    rollback_of: Mapped[int | None] = mapped_column(ForeignKey("dialplan_versions.id", ondelete="SET NULL"))
    sha256: Mapped[str] = mapped_column(String(64))
    files: Mapped[dict] = mapped_column(JSONB)
    diff: Mapped[str] = mapped_column(Text)
    problems: Mapped[str | None] = mapped_column(Text)
    seconds: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        CheckConstraint("outcome IN ('applied', 'rolled_back')", name="outcome_known"),
        Index("ix_dialplan_versions_instance_id", "instance", "id"),
    )


class Utterance(Base):
    """One thing a client said to the robot: the audio (a file, kept for review until the
    retention limit) and what the recogniser and the understanding made of it."""

    __tablename__ = "utterances"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("notification_attempts.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(20))          # ask / ask_time / menu
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_s: Mapped[float] = mapped_column(Float)
    audio_path: Mapped[str | None] = mapped_column(String(300))
    transcript: Mapped[str | None] = mapped_column(Text)
    intent: Mapped[str | None] = mapped_column(String(20))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    asr_ms: Mapped[int | None] = mapped_column(Integer)
    engine: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (UniqueConstraint("attempt_id", "seq", name="uq_utterances_attempt_seq"),)


class WebUser(Base):
    """A person who logs in to the web console. Passwords are stored as argon2id hashes."""

    __tablename__ = "web_users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    login: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))             # admin / head / manager
    password_hash: Mapped[str] = mapped_column(String(300))
    # head of department: his department; manager: his operator record (pause/resume himself)
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id", ondelete="SET NULL"))
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (CheckConstraint("role IN ('admin', 'head', 'manager')", name="role_known"),)


class WebSession(Base):
    """A logged-in browser: the cookie holds only the random id; the CSRF token is per session."""

    __tablename__ = "web_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("web_users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
