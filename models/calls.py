"""Queries over the call journal."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.db import make_engine
from models.tables import Call


def latest_calls(url: str, limit: int = 20) -> list[Call]:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            return list(session.scalars(select(Call).order_by(Call.started_at.desc(), Call.id.desc()).limit(limit)))
    finally:
        engine.dispose()


def call_by_uid(url: str, call_uid: str) -> Call | None:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            return session.scalar(select(Call).where(Call.call_uid == call_uid))
    finally:
        engine.dispose()
