"""Dialplan versions in Postgres (``dialplan_versions``), per Asterisk instance."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text, update
from sqlalchemy.engine import Engine

from models.db import make_engine
from models.tables import DialplanVersion


@dataclass(frozen=True)
class VersionInfo:
    id: int
    instance: str
    applied_by: str | None
    applied_at: datetime
    outcome: str
    active: bool
    rollback_of: int | None
    sha256: str
    problems: str | None
    seconds: float | None
    changed: int  # files the diff touches


def _engine(url_or_engine: str | Engine) -> tuple[Engine, bool]:
    if isinstance(url_or_engine, Engine):
        return url_or_engine, False
    return make_engine(url_or_engine), True


def record(url_or_engine: str | Engine, *, instance: str, applied_by: str | None, outcome: str, sha256: str,
           files: dict[str, str], diff: str, problems: str | None = None, rollback_of: int | None = None,
           seconds: float | None = None) -> int:
    """Store one apply; an 'applied' one becomes the instance's active version."""
    engine, owned = _engine(url_or_engine)
    try:
        with engine.begin() as conn:
            # Two admins applying at once: one waits for the other.
            conn.execute(text("LOCK TABLE dialplan_versions IN SHARE ROW EXCLUSIVE MODE"))
            active = outcome == "applied"
            if active:
                conn.execute(update(DialplanVersion).where(DialplanVersion.instance == instance,
                                                           DialplanVersion.active.is_(True)).values(active=False))
            return int(conn.scalar(DialplanVersion.__table__.insert().values(
                instance=instance, applied_by=applied_by[:80] if applied_by else None, outcome=outcome,
                active=active, rollback_of=rollback_of, sha256=sha256, files=files, diff=diff,
                problems=problems, seconds=seconds).returning(DialplanVersion.id)))
    finally:
        if owned:
            engine.dispose()


def list_versions(url_or_engine: str | Engine, instance: str, limit: int = 50) -> list[VersionInfo]:
    """Newest first."""
    engine, owned = _engine(url_or_engine)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(DialplanVersion.id, DialplanVersion.instance, DialplanVersion.applied_by,
                       DialplanVersion.applied_at, DialplanVersion.outcome, DialplanVersion.active,
                       DialplanVersion.rollback_of, DialplanVersion.sha256, DialplanVersion.problems,
                       DialplanVersion.seconds,
                       text("(SELECT count(*) FROM regexp_matches(diff, '^\\+\\+\\+ ', 'gn'))"))
                .where(DialplanVersion.instance == instance)
                .order_by(DialplanVersion.id.desc()).limit(limit)).all()
            return [VersionInfo(*row) for row in rows]
    finally:
        if owned:
            engine.dispose()


def get_version(url_or_engine: str | Engine, version_id: int) -> DialplanVersion | None:
    engine, owned = _engine(url_or_engine)
    try:
        with engine.connect() as conn:
            row = conn.execute(select(DialplanVersion.__table__).where(DialplanVersion.id == version_id)).first()
            return row  # type: ignore[return-value]
    finally:
        if owned:
            engine.dispose()


def active_version(url_or_engine: str | Engine, instance: str):
    engine, owned = _engine(url_or_engine)
    try:
        with engine.connect() as conn:
            return conn.execute(select(DialplanVersion.__table__)
                                .where(DialplanVersion.instance == instance, DialplanVersion.active.is_(True))
                                .order_by(DialplanVersion.id.desc()).limit(1)).first()
    finally:
        if owned:
            engine.dispose()
