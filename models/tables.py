"""The schema: client store (clients, phones), organisation (departments, operators), calls.

Phones are stored in E.164 only (see models.phones) so ``8 (916) 123-45-67`` and
``+7 916 123 45 67`` find the same client. Every change to these classes needs an Alembic
revision in models/migrations/versions.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger, CheckConstraint, DateTime, Enum, ForeignKey, Index, Integer, MetaData, String, Text, func,
)
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
    __tablename__ = "departments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    operators: Mapped[list["Operator"]] = relationship(back_populates="department")


class Operator(Base):
    __tablename__ = "operators"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    extension: Mapped[str] = mapped_column(String(20), unique=True)
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    department: Mapped[Department | None] = relationship(back_populates="operators")

    __table_args__ = (CheckConstraint("extension ~ '^[0-9]{2,8}$'", name="extension_digits"),)


class Client(Base):
    __tablename__ = "clients"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    full_name: Mapped[str] = mapped_column(String(300))
    company: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    phones: Mapped[list["ClientPhone"]] = relationship(back_populates="client", cascade="all, delete-orphan")


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

    __table_args__ = (Index("ix_calls_started_at", "started_at"),)
