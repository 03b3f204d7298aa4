"""``ivr report``: violations of the reaction standard; the inbound call table (``ivr calls``).

Thin layer over models.reports; times are shown in this host's local time.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime, timedelta
from typing import Sequence

import click

from ivr.operators.cli import database_option, fmt_time, local_midnight, parse_when, resolve_database_url, run_db


def _width(text: str) -> int:
    return sum(0 if unicodedata.combining(ch) else 1 for ch in text)


def _printable(value: object) -> str:
    # Caller IDs and names come from outside: no control characters reach the terminal.
    return "".join(ch if ch.isprintable() else "?" for ch in str(value))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: columns padded to the widest cell, two spaces apart."""
    cells = [[_printable(c) for c in row] for row in rows]
    widths = [max([_width(h)] + [_width(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v + " " * (w - _width(v)) for v, w in zip(values, widths)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


@click.group("report")
def report_group() -> None:
    """Reports: violations of the reaction standard."""


@report_group.command("violations")
@database_option
@click.option("--since", required=True, metavar="DATE", help="YYYY-MM-DD or ISO date-time (local time).")
@click.option("--until", default=None, metavar="DATE", help="Up to, not including (a bare date: up to its end).")
def violations_cmd(database_url: str | None, since: str, until: str | None) -> None:
    """Who did not react in time: reaction (assigned manager did not pick up) and summon."""
    from models.reports import violations

    start = parse_when(since, option="--since")
    end = None
    if until:
        end = parse_when(until, option="--until")
        if len(until) == 10:
            end += timedelta(days=1)
    rows = run_db(resolve_database_url(database_url), lambda conn: violations(conn, start, end))
    if not rows:
        click.echo(f"no violations since {fmt_time(start, with_date=True)}")
        return
    click.echo(table(["time", "operator", "extension", "kind", "standard s", "delay s", "call"],
                     [[fmt_time(r.at, with_date=True), r.operator, r.extension,
                       r.kind, _seconds(r.standard_seconds), _seconds(r.delay_seconds), r.call_uid or "-"]
                      for r in rows]))
    click.echo(f"{len(rows)} violation(s)")


def print_inbound_calls(database_url: str | None, since: datetime | None = None, until: datetime | None = None,
                        limit: int = 1000) -> None:
    """The inbound call table of ``ivr calls --today`` / ``--since``."""
    from models.reports import inbound_calls

    start = since or local_midnight()
    rows = run_db(resolve_database_url(database_url), lambda conn: inbound_calls(conn, start, until, limit))
    if not rows:
        click.echo(f"no inbound calls since {fmt_time(start, with_date=True)}")
        return
    with_date = until is not None or start < local_midnight()  # more than today: show the date
    click.echo(table(
        ["time", "from", "client", "rule", "department", "operators tried", "answered by", "wait s", "talk s",
         "result"],
        [[fmt_time(r.started_at, with_date=with_date), r.from_number or "-", r.client_name or "-", r.rule or "-",
          r.department or "-", r.tried or "-", r.answered_by or "-", _seconds(r.wait_seconds),
          _seconds(r.talk_seconds), r.result or "-"] for r in rows]))
    click.echo(f"{len(rows)} call(s)")
