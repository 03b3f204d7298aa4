"""What every `ivr` command group that touches Postgres shares: the --database-url option and how
the URL is found (option / DATABASE_URL, else var/ivr.env, else the local server)."""

from __future__ import annotations

import click

database_option = click.option("--database-url", envvar="DATABASE_URL", default=None,
                               help="Postgres URL (default: DATABASE_URL, var/ivr.env or the local server)")


def resolve_database_url(explicit: str | None) -> str:
    from ivr.config import ConfigError, load_settings
    from models.db import DEFAULT_LOCAL_URL, normalize_url

    if explicit:
        return normalize_url(explicit)
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None
    return normalize_url(settings.database_url or DEFAULT_LOCAL_URL)


def run_in_transaction(url: str, work):
    """``work(conn)`` (an async function of an AsyncConnection) in one transaction on a
    short-lived async engine, from synchronous CLI code."""
    import asyncio

    from models.db import make_async_engine

    async def main():
        engine = make_async_engine(url)
        try:
            async with engine.begin() as conn:
                return await work(conn)
        finally:
            await engine.dispose()

    return asyncio.run(main())
