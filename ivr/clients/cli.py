"""``ivr clients import FILE.csv`` and ``ivr client show PHONE``.

Thin layer: ivr.clients.importer parses and writes, models.clients reads the card. Exit codes:
0 done (bad rows are reported and skipped, not fatal), 1 database unreachable / unknown phone /
unusable file, 2 malformed phone or usage error.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from ivr.clitools import database_option, resolve_database_url as _database_url



def _connected(url: str) -> None:
    from models.migrate import DatabaseUnavailable, check_connection

    try:
        check_connection(url)
    except DatabaseUnavailable as exc:
        raise click.ClickException(str(exc)) from None


def _p(value: object) -> str:
    """Text from the database or a file, safe for the terminal."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(value))


# --- ivr clients import -------------------------------------------------------------------------
@click.group("clients")
def clients_group() -> None:
    """The client store: import the accounting system's export."""


@clients_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@database_option
@click.option("--dry-run", is_flag=True, help="Check everything against the database, write nothing.")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 10_000),
              help="Rows per transaction.")
def import_cmd(file: Path, database_url: str | None, dry_run: bool, batch_size: int) -> None:
    """Import clients from FILE (CSV, ';' or ',', utf-8 or cp1251; see docs/clients.md).

    Bad rows are reported as `line N: field: reason` and skipped; the rest is imported.
    Re-importing updates clients by external_id."""
    from ivr.clients.importer import CsvFormatError, import_rows, load_references, parse_clients_csv
    from models.db import make_engine

    url = _database_url(database_url)
    _connected(url)
    data = file.read_bytes()
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            operators, departments = load_references(conn)
        records = max(data.count(b"\n") - 1, 0) + (0 if data.endswith(b"\n") else 1)
        try:
            with click.progressbar(length=records, label="checking", file=click.get_text_stream("stderr")) as bar:
                parsed = parse_clients_csv(data, operators=operators, departments=departments, progress=bar.update)
        except CsvFormatError as exc:
            raise click.ClickException(f"{file}: {exc}") from None
        extra = f", ignored columns: {', '.join(parsed.ignored_columns)}" if parsed.ignored_columns else ""
        click.echo(f"{file.name}: {parsed.encoding}, delimiter {parsed.delimiter!r}, {parsed.total} rows{extra}")
        with click.progressbar(length=len(parsed.rows), label="importing" if not dry_run else "checking (dry run)",
                               file=click.get_text_stream("stderr")) as bar:
            result = import_rows(engine, parsed.rows, operators, departments, dry_run=dry_run,
                                 batch_size=batch_size, progress=bar.update)
    finally:
        engine.dispose()
    problems = sorted(parsed.errors + result.failed, key=lambda e: e.line)
    for error in problems:
        click.echo(_p(error))
    for note in result.notes:
        click.echo(_p(note))
    skipped = len({e.line for e in problems})
    summary = (f"created {result.created}, updated {result.updated}, skipped {skipped}"
               f" (active-sales contacts added {result.contacts_added})")
    click.echo(summary + (" - dry run, nothing written" if dry_run else ""))


# --- ivr client show ------------------------------------------------------------------------------
@click.group("client")
def client_group() -> None:
    """One client: his card and history."""


SEGMENT_NAMES = {"retail": "розница", "small_wholesale": "мелкий опт", "wholesale": "опт",
                 "large_wholesale": "крупный опт"}


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M") if value else "-"


def format_card(card) -> str:
    """The card and the history (contacts and calls merged, newest first) as text."""
    operator = (f"{card.assigned_operator_name} ({card.assigned_operator_extension})"
                if card.assigned_operator_extension else "-")
    department = (f"{card.department_name} ({card.department})" if card.department else "-")
    segment = f"{card.segment} ({SEGMENT_NAMES.get(card.segment, '')})" if card.segment else "-"
    lines = [
        f"client #{card.id}  {card.full_name}",
        f"  external id:   {card.external_id or '- (created by a call)'}",
        f"  address as:    {card.address_name or '-'}",
        f"  company:       {card.company or '-'}",
        f"  segment:       {segment}",
        f"  stage:         {card.stage}",
        f"  deals:         {card.deals_count}",
        f"  manager:       {operator}",
        f"  department:    {department}",
        f"  timezone:      {card.timezone or '-'}",
        f"  notify by:     {card.notify_channel}",
        f"  phones:        {', '.join(card.phones) or '-'}",
    ]
    for deal in card.deals:
        lines.append(f"  deal {deal.external_id or '-'}: closed {_when(deal.closed_at)}, amount "
                     f"{deal.amount if deal.amount is not None else '-'}, manager {deal.operator or '-'}")
    history: list[tuple[datetime, str]] = []
    for c in card.contacts:
        who = f"{c.operator_name} ({c.operator_extension})" if c.operator_extension else "-"
        history.append((c.at, f"{_when(c.at)}  contact {c.direction:<8}  operator {who}  result {c.result or '-'}"
                              + (f"  call {c.call_uid}" if c.call_uid else "") + (f"  {c.note}" if c.note else "")))
    for c in card.calls:
        talk = f"  talk {c.talk_seconds:.0f}s" if c.talk_seconds is not None else ""
        history.append((c.started_at, f"{_when(c.started_at)}  call    {c.direction:<8}  from {c.from_number or '?'} "
                                      f"to {c.to_number or '?'}  department {c.department or '-'}  answered by "
                                      f"{c.answered_by or '-'}  result {c.result or '-'}{talk}  id {c.call_uid}"))
    history.sort(key=lambda item: item[0], reverse=True)
    lines.append(f"history ({len(card.contacts)} contacts, {len(card.calls)} calls, newest first):")
    lines.extend(f"  {text}" for _, text in history)
    if not history:
        lines.append("  none yet")
    return "\n".join(_p(line) for line in lines)


@client_group.command("show")
@click.argument("phone")
@database_option
def show_cmd(phone: str, database_url: str | None) -> None:
    """Show the card and history of the client with PHONE (any format: 8 (916) 123-45-67, +7 916 ...)."""
    from models.clients import client_card
    from models.db import make_engine
    from models.phones import PhoneNumberError, normalize_phone

    try:
        e164 = normalize_phone(phone)
    except PhoneNumberError as exc:
        raise click.UsageError(f"PHONE: {exc}") from None
    url = _database_url(database_url)
    _connected(url)
    engine = make_engine(url)
    try:
        card = client_card(engine, e164)
    finally:
        engine.dispose()
    if card is None:
        raise click.ClickException(f"no client with phone {e164}")
    click.echo(format_card(card))


def register(main: click.Group) -> None:
    """Mount ``ivr clients`` and ``ivr client`` on the ``ivr`` command."""
    main.add_command(clients_group, "clients")
    main.add_command(client_group, "client")
