"""``ivr notify create|list|show|cancel|status|attempts|webhooks|dnc``: notification jobs from the command line.

``status`` and ``attempts`` report what the robot did (ivr/notify/report.py): a table with
per-status counts, or a CSV export of every attempt.

Thin layer over models.notifications (the same validation and idempotency as the HTTP API).
Exit codes: 0 done, 1 database unreachable / unknown job / state does not allow it, 2 usage or
validation error (the message names the field).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ivr.clitools import database_option, resolve_database_url

templates_option = click.option(
    "--templates", "templates_dir", envvar="IVR_NOTIFY_TEMPLATES", default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Templates folder (default: IVR_NOTIFY_TEMPLATES, else the shipped ivr/notify/templates)")
company_option = click.option("--company-name", envvar="IVR_COMPANY_NAME", default="",
                              help="Company name the templates say (default: IVR_COMPANY_NAME)")


def _p(value: object) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in str(value))


def _run(url: str, work):
    """Run ``work(conn)`` in one transaction on a short-lived async engine."""
    from ivr.clitools import run_in_transaction
    from models.migrate import DatabaseUnavailable, check_connection

    try:
        check_connection(url)
    except DatabaseUnavailable as exc:
        raise click.ClickException(str(exc)) from None

    return run_in_transaction(url, work)


def _fail_on_model_errors(call):
    from ivr.notify.jobs import InvalidTransition
    from models.notifications import JobNotFound, JobValidationError, JobValidationErrors

    try:
        return call()
    except JobValidationErrors as exc:
        raise click.UsageError("; ".join(f"{e.field}: {e.message}" for e in exc.errors)) from None
    except JobValidationError as exc:
        raise click.UsageError(f"{exc.field}: {exc.message}") from None
    except (JobNotFound, InvalidTransition) as exc:
        raise click.ClickException(str(exc)) from None


def _line(job) -> str:
    when = job.next_attempt_at.strftime("%Y-%m-%d %H:%M") if job.next_attempt_at else "-"
    return (f"{job.id:>8}  {job.status:<12} {job.result or '-':<12} {job.e164:<16} {_p(job.template):<20} "
            f"{job.attempts_made}/{job.max_attempts}  next {when}  {_p(job.external_id or '')}")


def format_job(job, attempts: list[dict]) -> str:
    data = job.as_json()
    lines = [f"{key:>16}: {_p(json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value)}"
             for key, value in data.items()]
    lines.append(f"{'attempts':>16}: {len(attempts)}")
    for a in attempts:
        lines.append(f"    #{a['attempt_no']} {a['channel']} {a['state']} started {a['started_at']} "
                     f"cause {_p(a['cause'] or '-')} digits {_p(a['digits'] or '-')}")
    return "\n".join(lines)


@click.group("notify")
def notify_group() -> None:
    """Notification jobs of the outbound confirmation robot."""


@notify_group.command("create")
@click.option("--phone", help="Number to notify (any usual format); a new number gets a potential client")
@click.option("--client-id", type=int, help="Client id (his first phone unless --phone is given)")
@click.option("--template", required=True, help="Template name (<name>.txt.j2 in the templates folder)")
@click.option("--var", "variables", multiple=True, metavar="KEY=VALUE", help="A template variable (repeatable)")
@click.option("--channel", type=click.Choice(["call", "sms", "preference"]), default="preference",
              show_default=True)
@click.option("--external-id", help="Idempotency key: the same id again returns the first job")
@click.option("--max-attempts", type=int, default=None,
              help="Barrier count of contacts (default: the template's barrier in the retry policy)")
@click.option("--earliest", type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M%z"]),
              help="Not before (with offset, e.g. 2026-12-01T10:00:00+0300)")
@click.option("--deadline", type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M%z"]),
              help="Not after (with offset)")
@templates_option
@company_option
@database_option
def create_cmd(phone, client_id, template, variables, channel, external_id, max_attempts, earliest, deadline,
               templates_dir, company_name, database_url) -> None:
    """Create a notification job; prints it (and whether it already existed)."""
    from ivr.notify.templates import TemplateStore, default_folder
    from models.notifications import JobRequest, create_job

    values: dict[str, str] = {}
    for item in variables:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"--var {item!r}: expected KEY=VALUE")
        values[key.strip()] = value
    request = JobRequest(template=template, variables=values, client_id=client_id, phone=phone, channel=channel,
                         earliest_at=earliest, deadline_at=deadline, external_id=external_id,
                         max_attempts=max_attempts)
    store = TemplateStore(templates_dir or default_folder(), company_name=company_name)
    url = resolve_database_url(database_url)
    job, created = _fail_on_model_errors(lambda: _run(url, lambda conn: create_job(conn, request, templates=store)))
    click.echo(("created" if created else "already exists") + f": job {job.id}")
    click.echo(format_job(job, []))


@notify_group.command("list")
@click.option("--status", help="Only jobs in this state")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@database_option
def list_cmd(status, limit, database_url) -> None:
    """Jobs, newest first."""
    from models.notifications import list_jobs

    url = resolve_database_url(database_url)
    jobs = _fail_on_model_errors(lambda: _run(url, lambda conn: list_jobs(conn, status=status, limit=limit)))
    if not jobs:
        click.echo("no jobs")
    for job in jobs:
        click.echo(_line(job))


@notify_group.command("show")
@click.argument("job_id", type=int)
@database_option
def show_cmd(job_id, database_url) -> None:
    """One job with its attempts."""
    from models.notifications import get_job, job_attempts

    async def work(conn):
        return await get_job(conn, job_id), await job_attempts(conn, job_id)

    url = resolve_database_url(database_url)
    job, attempts = _fail_on_model_errors(lambda: _run(url, work))
    click.echo(format_job(job, attempts))


@notify_group.command("cancel")
@click.argument("job_id", type=int)
@database_option
def cancel_cmd(job_id, database_url) -> None:
    """Cancel a job (not while it is being dialled, not once finished)."""
    from models.notifications import cancel_job

    url = resolve_database_url(database_url)
    job = _fail_on_model_errors(lambda: _run(url, lambda conn: cancel_job(conn, job_id)))
    click.echo(f"job {job.id}: {job.status}")


# --- reports: what the robot did --------------------------------------------------------------

def parse_since(value: str | None):
    """YYYY-MM-DD (midnight, this host's zone) or an ISO date-time (no zone: this host's)."""
    from datetime import date, datetime, time

    if value is None:
        return None
    try:
        parsed = (datetime.combine(date.fromisoformat(value), time()) if len(value) == 10
                  else datetime.fromisoformat(value))
    except ValueError:
        raise click.BadParameter(f"{value!r}: use YYYY-MM-DD or YYYY-MM-DDTHH:MM[+03:00]",
                                 param_hint="--since") from None
    return parsed if parsed.tzinfo else parsed.astimezone()


def _write_csv(url: str, flt, target: str) -> int:
    """The CSV export to ``target`` (``-``: stdout). A file is written next to its final name and
    renamed when complete, so a failed export never leaves half a file under that name."""
    import os
    import tempfile

    from ivr.notify.report import write_attempts_csv

    if target == "-":
        stream = click.get_text_stream("stdout", encoding="utf-8")
        n = _run(url, lambda conn: write_attempts_csv(conn, flt, stream))
        stream.flush()
        return n
    path = Path(target)
    if path.is_dir():
        raise click.BadParameter(f"{target} is a folder", param_hint="--csv")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            n = _run(url, lambda conn: write_attempts_csv(conn, flt, out))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


@notify_group.command("status")
@click.option("--status", "statuses", multiple=True, metavar="STATE",
              help="Only jobs in this state (repeatable): pending, scheduled, dialing, sent, confirmed, "
                   "not_received, delivered, no_action, exhausted, expired, cancelled, failed")
@click.option("--template", help="Only jobs of this template")
@click.option("--since", metavar="DATE", help="Only jobs created since DATE (YYYY-MM-DD or ISO date-time)")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True,
              help="Table rows (the counts and the CSV cover every matching job)")
@click.option("--csv", "csv_target", metavar="FILE|-",
              help="Export the matching jobs with their attempts as CSV (UTF-8, header row) to FILE or stdout")
@database_option
def status_cmd(statuses, template, since, limit, csv_target, database_url) -> None:
    """Jobs as a table (newest first) with per-status counts, or a CSV export of their attempts."""
    from ivr.notify.report import JobFilter, format_counts, format_table, job_lines, status_counts

    try:
        flt = JobFilter(statuses=tuple(statuses), template=template, since=parse_since(since))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--status") from None
    url = resolve_database_url(database_url)
    if csv_target:
        n = _write_csv(url, flt, csv_target)
        if csv_target != "-":
            click.echo(f"{n} rows written to {csv_target}", err=True)
        return

    async def work(conn):
        return await job_lines(conn, flt, limit=limit), await status_counts(conn, flt)

    lines, counts = _run(url, work)
    if not lines:
        click.echo("no jobs")
        return
    click.echo(format_table(lines))
    total = sum(counts.values())
    if total > len(lines):
        click.echo(f"(showing the newest {len(lines)} of {total}; --limit for more, --csv for all)")
    click.echo(format_counts(counts))


@notify_group.command("attempts")
@click.argument("job_id", type=int)
@database_option
def attempts_cmd(job_id, database_url) -> None:
    """One job's attempts: times (client's local time), cause, hangup cause, digits, prompt."""
    from ivr.notify.report import format_attempts, job_attempt_lines

    url = resolve_database_url(database_url)
    job, attempts = _run(url, lambda conn: job_attempt_lines(conn, job_id))
    if job is None:
        raise click.ClickException(f"notification job {job_id} not found")
    click.echo(format_attempts(job, attempts))


@notify_group.command("webhooks")
@click.option("--send", "mode", flag_value="once", help="Send the rows due now once, then show the queue")
@click.option("--run", "mode", flag_value="run", help="Keep sending until interrupted (Ctrl-C)")
@click.option("--url", envvar="IVR_WEBHOOK_URL", default=None,
              help="CRM webhook URL (default: IVR_WEBHOOK_URL); the secret is IVR_WEBHOOK_SECRET, never an option")
@click.option("--timeout", type=click.FloatRange(0.1, 120), default=10.0, show_default=True)
@database_option
def webhooks_cmd(mode, url, timeout, database_url) -> None:
    """The CRM webhook outbox: delivered / waiting / retrying, the latest failures; --send, --run."""
    import asyncio
    import os

    from sqlalchemy import text as sql

    from ivr.notify.webhook import WebhookSender, queue_counts

    db_url = resolve_database_url(database_url)

    if mode is not None:
        if not url:
            raise click.UsageError("no webhook URL: give --url or set IVR_WEBHOOK_URL")
        from models.db import make_async_engine

        async def send() -> None:
            engine = make_async_engine(db_url)
            sender = WebhookSender(engine, url, os.environ.get("IVR_WEBHOOK_SECRET") or None, timeout=timeout)
            try:
                if mode == "once":
                    while await sender.send_due_once() >= sender.batch:
                        pass
                else:
                    await sender.run()
            finally:
                await sender.close()
                await engine.dispose()

        _run(db_url, lambda conn: _noop())  # reachability check with the usual message
        try:
            asyncio.run(send())
        except KeyboardInterrupt:
            pass

    async def work(conn):
        counts = await queue_counts(conn)
        failing = (await conn.execute(sql(
            "SELECT id, job_id, tries, next_try_at, last_error FROM webhook_deliveries "
            "WHERE delivered_at IS NULL AND tries > 0 ORDER BY next_try_at LIMIT 10"))).mappings().all()
        return counts, failing

    counts, failing = _run(db_url, work)
    click.echo("  ".join(f"{k} {v}" for k, v in counts.items()))
    for row in failing:
        click.echo(f"  #{row['id']} job {row['job_id']}: {row['tries']} tries, "
                   f"next {row['next_try_at']:%Y-%m-%d %H:%M:%S %Z}, last error: {_p(row['last_error'] or '-')}")


async def _noop() -> None:
    return None


@notify_group.group("dnc")
def dnc_group() -> None:
    """The do-not-call list: numbers the robot never contacts (jobs refused at creation, pending
    jobs failed at their next claim)."""


@dnc_group.command("add")
@click.argument("phone")
@click.option("--reason", default=None, help="Why (shown in the list and in refused requests)")
@database_option
def dnc_add_cmd(phone, reason, database_url) -> None:
    from models.notifications import add_do_not_call
    from models.phones import PhoneNumberError

    url = resolve_database_url(database_url)
    try:
        e164 = _run(url, lambda conn: add_do_not_call(conn, phone, (reason or "")[:200] or None))
    except PhoneNumberError as exc:
        raise click.UsageError(f"phone: {exc}") from None
    click.echo(f"{e164} is on the do-not-call list")


@dnc_group.command("remove")
@click.argument("phone")
@database_option
def dnc_remove_cmd(phone, database_url) -> None:
    from models.notifications import remove_do_not_call
    from models.phones import PhoneNumberError

    url = resolve_database_url(database_url)
    try:
        removed = _run(url, lambda conn: remove_do_not_call(conn, phone))
    except PhoneNumberError as exc:
        raise click.UsageError(f"phone: {exc}") from None
    if not removed:
        raise click.ClickException(f"{phone} is not on the do-not-call list")
    click.echo(f"{phone} removed from the do-not-call list")


@dnc_group.command("list")
@database_option
def dnc_list_cmd(database_url) -> None:
    from models.notifications import list_do_not_call

    rows = _run(resolve_database_url(database_url), list_do_not_call)
    for e164, reason, added in rows:
        click.echo(f"{e164:<16}  {added:%Y-%m-%d %H:%M}  {_p(reason or '-')}")
    click.echo(f"{len(rows)} numbers")
