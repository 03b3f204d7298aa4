"""``ivr operator``: add operators, see who is available, pause / rejoin / log in / log out.

Thin layer: models.operators does the work inside one transaction; this module parses options,
turns known failures (unknown extension or department, dead database) into a clear message and
exit code 1, and prints tables.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any, Awaitable, Callable

import click

from ivr.clitools import database_option, resolve_database_url

from models.tables import OperatorStatus



def run_db(url: str, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run ``work(conn)`` in one transaction; known failures become a ClickException (exit 1)."""
    from sqlalchemy.exc import DBAPIError

    from models.db import mask_url
    from models.operators import OperatorError

    from ivr.clitools import run_in_transaction

    try:
        return run_in_transaction(url, work)
    except OperatorError as exc:
        raise click.ClickException(str(exc)) from None
    except (DBAPIError, OSError) as exc:
        orig = getattr(exc, "orig", None) or exc
        reason = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
        raise click.ClickException(f"database {mask_url(url)} unreachable or failed: {reason}") from None


def parse_when(value: str, *, option: str) -> datetime:
    """YYYY-MM-DD (midnight) or an ISO date-time; without a zone: this host's local time."""
    try:
        if len(value) == 10:
            parsed = datetime.combine(date.fromisoformat(value), time())
        else:
            parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: use YYYY-MM-DD or YYYY-MM-DDTHH:MM", param_hint=option) from None
    return parsed if parsed.tzinfo else parsed.astimezone()


def local_midnight(now: datetime | None = None) -> datetime:
    now = (now or datetime.now().astimezone()).astimezone()
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def fmt_time(value: datetime | None, *, with_date: bool = False) -> str:
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def _status_text(status: OperatorStatus) -> str:
    return status.value


@click.group("operator")
def operator_group() -> None:
    """Operators: add, list, pause / rejoin, log in / log out, history."""


@operator_group.command("add")
@database_option
@click.argument("name")
@click.argument("extension")
@click.argument("department")
@click.option("--contact", default=None, metavar="SIP_URI",
              help="Static contact for a phone that does not register, e.g. sip:10.0.0.5:5062")
def add_cmd(database_url: str | None, name: str, extension: str, department: str, contact: str | None) -> None:
    """Add operator NAME with EXTENSION (2-8 digits) to DEPARTMENT (its code)."""
    from models.operators import add_operator

    url = resolve_database_url(database_url)
    row = run_db(url, lambda conn: add_operator(conn, name, extension, department, contact))
    click.echo(f"added operator {row.extension} {row.name} to {row.department} (available); "
               f"run `ivr stack sync-operators` to create his phone endpoint")


@operator_group.command("list")
@database_option
@click.option("--department", default=None, help="Only this department (code).")
def list_cmd(database_url: str | None, department: str | None) -> None:
    """Operators with their state, pause reason and since when."""
    from ivr.reports.cli import table
    from models.operators import department_id, list_operators, operators_in_department

    async def work(conn):
        if department:
            await department_id(conn, department)  # a clear error for an unknown code
            return await operators_in_department(conn, department)
        return await list_operators(conn)

    rows = run_db(resolve_database_url(database_url), work)
    if not rows:
        click.echo("no operators yet (ivr operator add NAME EXTENSION DEPARTMENT)")
        return
    click.echo(table(["ext", "name", "department", "status", "reason", "since"],
                     [[r.extension, r.name, r.department or "-", _status_text(r.status), r.pause_reason or "-",
                       fmt_time(r.status_since, with_date=True)] for r in rows]))


def _change(database_url: str | None, extension: str, status: OperatorStatus, reason: str | None = None) -> None:
    from models.operators import set_status

    change = run_db(resolve_database_url(database_url),
                    lambda conn: set_status(conn, extension, status, reason=reason, cause="cli"))
    who = f"operator {change.extension} {change.name}"
    if not change.changed:
        click.echo(f"{who} is already {change.status.value}" + (f" ({change.reason})" if change.reason else ""))
        return
    click.echo(f"{who}: {change.previous.value} -> {change.status.value}"
               + (f" ({change.reason})" if change.reason else ""))


@operator_group.command("pause")
@database_option
@click.argument("extension")
@click.option("--reason", default=None, help="Why (kept in his history); default «пауза из консоли».")
def pause_cmd(database_url: str | None, extension: str, reason: str | None) -> None:
    """Pause operator EXTENSION: no calls are offered to him until he rejoins."""
    _change(database_url, extension, OperatorStatus.paused, reason)


@operator_group.command("rejoin")
@database_option
@click.argument("extension")
def rejoin_cmd(database_url: str | None, extension: str) -> None:
    """End the pause of operator EXTENSION (he gets calls again)."""
    _change(database_url, extension, OperatorStatus.available)


@operator_group.command("login")
@database_option
@click.argument("extension")
def login_cmd(database_url: str | None, extension: str) -> None:
    """Log operator EXTENSION in (available)."""
    _change(database_url, extension, OperatorStatus.available)


@operator_group.command("logout")
@database_option
@click.argument("extension")
def logout_cmd(database_url: str | None, extension: str) -> None:
    """Log operator EXTENSION out (no calls until he logs in)."""
    _change(database_url, extension, OperatorStatus.logged_out)


@operator_group.command("events")
@database_option
@click.argument("extension")
@click.option("--since", default=None, metavar="DATE", help="YYYY-MM-DD or ISO date-time (default: today).")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(1, 100_000))
def events_cmd(database_url: str | None, extension: str, since: str | None, limit: int) -> None:
    """The history of operator EXTENSION: logins, pauses with reasons, rejoins, misses."""
    from ivr.reports.cli import table
    from models.operators import operator_events

    start = parse_when(since, option="--since") if since else local_midnight()
    rows = run_db(resolve_database_url(database_url),
                  lambda conn: operator_events(conn, extension, since=start, limit=limit))
    if not rows:
        click.echo(f"no events of {extension} since {fmt_time(start, with_date=True)}")
        return
    click.echo(table(["time", "event", "status", "reason", "cause", "call"],
                     [[fmt_time(r.at, with_date=True), r.event, r.status.value if r.status else "-", r.reason or "-",
                       r.cause or "-", r.call_uid or "-"] for r in rows]))


__all__ = ["operator_group", "run_db", "resolve_database_url", "parse_when", "local_midnight", "fmt_time",
           "database_option"]
