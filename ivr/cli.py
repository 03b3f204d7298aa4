"""``ivr``: the operational command line (database, stack, calls, demo).

Each group is a thin layer over a module that does the work, so tests call the modules and
the CLI only parses options and prints.
"""

from __future__ import annotations

import sys
from datetime import datetime

import click

from ivr.config import ConfigError, load_settings
from models.db import DEFAULT_LOCAL_URL, mask_url, normalize_url


def _settings():
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None


def _database_url(explicit: str | None) -> str:
    settings = _settings()
    return normalize_url(explicit or settings.database_url or DEFAULT_LOCAL_URL)


@click.group()
def main() -> None:
    """IVR/PBX for a single public number: stack, database, calls."""


# --- database -------------------------------------------------------------------------------
@main.group()
def db() -> None:
    """Schema migrations (Alembic)."""


def _migrate(direction: str, database_url: str | None, revision: str) -> None:
    from models import migrate

    url = _database_url(database_url)
    try:
        getattr(migrate, direction)(url, revision)
    except migrate.DatabaseUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"database {mask_url(url)} is at revision {revision}")


@db.command("upgrade")
@click.option("--database-url", envvar="DATABASE_URL", default=None, help="Postgres URL (default: discovered)")
@click.argument("revision", default="head")
def db_upgrade(database_url: str | None, revision: str) -> None:
    """Migrate the schema up to REVISION (default: head)."""
    _migrate("upgrade", database_url, revision)


@db.command("downgrade")
@click.option("--database-url", envvar="DATABASE_URL", default=None)
@click.argument("revision")
def db_downgrade(database_url: str | None, revision: str) -> None:
    """Migrate the schema down to REVISION (e.g. base)."""
    _migrate("downgrade", database_url, revision)


# --- calls ----------------------------------------------------------------------------------
@main.group(invoke_without_command=True)
@click.option("--today", is_flag=True, help="Today's inbound calls as a table (the default).")
@click.option("--since", default=None, metavar="DATE", help="Inbound calls since DATE (YYYY-MM-DD or ISO).")
@click.option("--until", default=None, metavar="DATE", help="Up to DATE, not including.")
@click.option("--database-url", envvar="DATABASE_URL", default=None)
@click.pass_context
def calls(ctx: click.Context, today: bool, since: str | None, until: str | None, database_url: str | None) -> None:
    """The call journal: `ivr calls [--today | --since DATE]` prints inbound calls with the
    operators tried; `ivr calls list` the latest calls of every kind."""
    if ctx.invoked_subcommand is not None:
        return
    from ivr.operators.cli import parse_when
    from ivr.reports.cli import print_inbound_calls

    if today and since:
        raise click.UsageError("use --today or --since, not both")
    print_inbound_calls(database_url, parse_when(since, option="--since") if since else None,
                        parse_when(until, option="--until") if until else None)


@calls.command("list")
@click.option("--database-url", envvar="DATABASE_URL", default=None)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
def calls_list(database_url: str | None, limit: int) -> None:
    """Print the latest calls, newest first."""
    from models.calls import latest_calls
    from models.migrate import DatabaseUnavailable, check_connection

    url = _database_url(database_url)
    try:
        check_connection(url)
    except DatabaseUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    rows = latest_calls(url, limit)
    if not rows:
        click.echo("no calls yet")
        return
    for row in rows:
        click.echo(format_call(row))


def _t(value: datetime | None) -> str:
    return value.astimezone().strftime("%H:%M:%S") if value else "-"


def format_call(row) -> str:
    duration = f"{(row.ended_at - row.started_at).total_seconds():.1f}s" if row.ended_at else "in progress"
    return (
        f"{row.started_at.astimezone():%Y-%m-%d %H:%M:%S}  {row.direction.value:<8} "
        f"from {row.from_number or '?'} to {row.to_number or '?'}  answered {_t(row.answered_at)}  "
        f"ended {_t(row.ended_at)} ({duration})  result={row.result or '-'} digits={row.digits or '-'} "
        f"hangup_by={row.hangup_by or '-'}  id={row.call_uid}"
        + (f"\n    notes: {row.notes}" if row.notes else "")
    )


def _register_capability_commands() -> None:
    # Imported here, not at the top: each capability owns its CLI module and pulls in its own
    # dependencies; ivr/cli.py only mounts them.
    from ivr.demo import demo_command
    from ivr.operators.cli import operator_group
    from ivr.reports.cli import report_group
    from ivr.stack.cli import stack_group
    from routing.cli import routing_group

    main.add_command(stack_group, "stack")
    from ivr.dialplan.cli import dialplan_group
    main.add_command(dialplan_group, "dialplan")
    main.add_command(routing_group, "routing")
    main.add_command(demo_command, "demo")
    main.add_command(operator_group, "operator")
    main.add_command(report_group, "report")
    from ivr.clients.cli import register as register_clients
    register_clients(main)
    from ivr.notify.cli import notify_group
    main.add_command(notify_group, "notify")
    from ivr.notify.cli import status_cmd
    main.add_command(status_cmd, "notifications")   # issue 4: `ivr notifications --status ...`
    from ivr.web.cli import web_group
    main.add_command(web_group, "web")   # issue 7: the web console


_register_capability_commands()

if __name__ == "__main__":
    sys.exit(main())
