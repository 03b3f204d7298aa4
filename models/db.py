"""Engines and sessions. One place decides which driver and pool settings the product uses."""

from __future__ import annotations

import re

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

DEFAULT_LOCAL_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/ivr"


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs (what admins paste) and use the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def mask_url(url: str) -> str:
    """The URL for messages: the password replaced by ***."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def make_engine(url: str) -> Engine:
    return create_engine(normalize_url(url), pool_pre_ping=True, future=True)


def make_async_engine(url: str, *, pre_ping: bool = True, pool_size: int = 5,
                      synchronous_commit: bool = True) -> AsyncEngine:
    # Short connect timeout: a dead database must be noticed quickly during a call, the
    # call journal retries and spools on its own schedule. ``pre_ping=False`` for hot paths
    # that retry a dropped connection themselves (ivr/inbound/store.py): one round trip less.
    # ``synchronous_commit=False``: commits do not wait for the WAL flush (a server crash may lose
    # the last fraction of a second of them) - for the routing path's many small writes
    # (attempts, client cards, contacts), never for the call journal (docs/decisions.md).
    connect_args: dict = {"connect_timeout": 3}
    if not synchronous_commit:
        connect_args["options"] = "-c synchronous_commit=off"
    return create_async_engine(
        normalize_url(url), pool_pre_ping=pre_ping, pool_size=pool_size, max_overflow=pool_size,
        connect_args=connect_args,
    )


def async_session_factory(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


def run_sql(url: str, statement: str, **params):
    """One parameterised statement in its own transaction on a short-lived engine; the rows if
    it returns any. For scripts, the demo and tests — never for the controller's hot path."""
    from sqlalchemy import text

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return result.all() if result.returns_rows else None
    finally:
        engine.dispose()
