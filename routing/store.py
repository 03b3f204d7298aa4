"""Routing rules in Postgres: every applied file is a row of ruleset_versions (source, sha256,
parsed JSON); the newest active one is in force. Applying also upserts the departments table
(code, name, strategy, ring_timeout, wrapup_seconds, timezone) so reports and the controller
can read them without parsing YAML.

Admin side (sync, for the CLI): apply_ruleset, list_versions, active_source, rollback.
Controller side (async, on its own connection): active_version (cheap, polled), load_active_ruleset.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection

from models.db import make_engine
from models.tables import Department, RulesetVersion
from routing.rules import Ruleset


@dataclass(frozen=True)
class VersionInfo:
    id: int
    sha256: str
    applied_by: str | None
    applied_at: datetime
    active: bool
    rules: int
    departments: int


def sha256_of(source_text: str) -> str:
    return hashlib.sha256(source_text.encode("utf-8")).hexdigest()


def _engine(url_or_engine: str | Engine) -> tuple[Engine, bool]:
    if isinstance(url_or_engine, Engine):
        return url_or_engine, False
    return make_engine(url_or_engine), True


def _lock(conn: Connection) -> None:
    # Two admins applying at once: one waits for the other; readers are not blocked.
    conn.execute(text("LOCK TABLE ruleset_versions IN SHARE ROW EXCLUSIVE MODE"))


def _upsert_departments(conn: Connection, ruleset: Ruleset) -> None:
    for spec in ruleset.departments.values():
        values = dict(code=spec.code, name=spec.name, strategy=spec.strategy, ring_timeout=spec.ring_timeout,
                      wrapup_seconds=spec.wrapup_seconds, timezone=spec.timezone)
        stmt = pg_insert(Department).values(**values)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=[Department.code],
            set_={k: stmt.excluded[k] for k in values if k != "code"}))


def apply_ruleset(url_or_engine: str | Engine, ruleset: Ruleset, source_text: str, applied_by: str | None) -> int:
    """Store a new active version (all older ones inactive) and upsert its departments, in one
    transaction. Departments missing from the file are kept (operators and clients refer to
    them). Returns the new version id."""
    engine, owned = _engine(url_or_engine)
    try:
        with engine.begin() as conn:
            _lock(conn)
            conn.execute(update(RulesetVersion).where(RulesetVersion.active.is_(True)).values(active=False))
            version_id = conn.scalar(
                RulesetVersion.__table__.insert().values(
                    source=source_text, sha256=sha256_of(source_text), parsed=ruleset.to_json(),
                    applied_by=applied_by[:80] if applied_by else None, active=True,
                ).returning(RulesetVersion.id))
            _upsert_departments(conn, ruleset)
            return int(version_id)
    finally:
        if owned:
            engine.dispose()


def rollback(url_or_engine: str | Engine, version_id: int) -> Ruleset:
    """Make an older version the active one again (and upsert its departments). KeyError when
    there is no such version."""
    engine, owned = _engine(url_or_engine)
    try:
        with engine.begin() as conn:
            _lock(conn)
            parsed = conn.scalar(select(RulesetVersion.parsed).where(RulesetVersion.id == version_id))
            if parsed is None:
                raise KeyError(version_id)
            ruleset = Ruleset.from_json(parsed)
            conn.execute(update(RulesetVersion).where(RulesetVersion.active.is_(True),
                                                      RulesetVersion.id != version_id).values(active=False))
            conn.execute(update(RulesetVersion).where(RulesetVersion.id == version_id).values(active=True))
            _upsert_departments(conn, ruleset)
            return ruleset
    finally:
        if owned:
            engine.dispose()


def list_versions(url_or_engine: str | Engine, limit: int = 50) -> list[VersionInfo]:
    """Newest first."""
    engine, owned = _engine(url_or_engine)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(RulesetVersion.id, RulesetVersion.sha256, RulesetVersion.applied_by,
                       RulesetVersion.applied_at, RulesetVersion.active,
                       text("jsonb_array_length(parsed->'rules')"),
                       text("(SELECT count(*) FROM jsonb_object_keys(parsed->'departments'))"))
                .order_by(RulesetVersion.id.desc()).limit(limit)).all()
            return [VersionInfo(*row) for row in rows]
    finally:
        if owned:
            engine.dispose()


def active_source(url_or_engine: str | Engine) -> tuple[int, str] | None:
    """(version id, YAML source) of the active version, or None when nothing was applied yet."""
    engine, owned = _engine(url_or_engine)
    try:
        with engine.connect() as conn:
            row = conn.execute(select(RulesetVersion.id, RulesetVersion.source)
                               .where(RulesetVersion.active.is_(True))
                               .order_by(RulesetVersion.id.desc()).limit(1)).first()
            return (row[0], row[1]) if row else None
    finally:
        if owned:
            engine.dispose()


async def active_version(conn: AsyncConnection) -> int | None:
    """The id of the version in force (a tiny query); poll it and reload only on change."""
    return await conn.scalar(select(RulesetVersion.id).where(RulesetVersion.active.is_(True))
                             .order_by(RulesetVersion.id.desc()).limit(1))


async def load_active_ruleset(conn: AsyncConnection) -> tuple[int, Ruleset] | None:
    """(version id, Ruleset) in force, or None when no rules were ever applied (the controller
    then uses routing/rules.yaml from the package or its built-in default)."""
    row = (await conn.execute(select(RulesetVersion.id, RulesetVersion.parsed)
                              .where(RulesetVersion.active.is_(True))
                              .order_by(RulesetVersion.id.desc()).limit(1))).first()
    if row is None:
        return None
    return int(row[0]), Ruleset.from_json(row[1])
