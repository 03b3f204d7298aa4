"""``ivr notify create|list|show|cancel``: notification jobs from the command line.

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
@click.option("--max-attempts", type=int, default=5, show_default=True, help="Barrier count of contacts")
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
