"""``ivr routing``: check, apply, show, history, rollback and explain the inbound routing rules."""

from __future__ import annotations

import difflib
import getpass
from datetime import datetime
from pathlib import Path

import click

from ivr.clitools import database_option, resolve_database_url as _database_url

from routing.loader import DEFAULT_FILE

file_argument = click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))


def _connected(explicit: str | None) -> str:
    from models.migrate import DatabaseUnavailable, check_connection

    url = _database_url(explicit)
    try:
        check_connection(url)
    except DatabaseUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    return url


def _load(file: Path | None):
    """(ruleset, source, path) or exit 1 after printing every error."""
    from routing.loader import check

    path = file or DEFAULT_FILE
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from None
    ruleset, errors = check(source, path.name)
    if errors:
        for line in errors:
            click.echo(line, err=True)
        raise click.ClickException(f"{len(errors)} error(s) in {path}")
    return ruleset, source, path


def _summary(ruleset) -> str:
    return f"{len(ruleset.rules)} rules, {len(ruleset.departments)} departments"


@click.group("routing")
def routing_group() -> None:
    """Inbound routing rules (routing/rules.yaml): check, apply, history, rollback."""


@routing_group.command("check")
@file_argument
def check_cmd(file: Path | None) -> None:
    """Validate FILE (default: routing/rules.yaml); every error with its line number."""
    ruleset, _source, _path = _load(file)
    click.echo(f"ok: {_summary(ruleset)}")


@routing_group.command("apply")
@file_argument
@database_option
@click.option("--by", "applied_by", default=None, help="Who applies (default: the login name).")
@click.option("--dry-run", is_flag=True, help="Check and show the diff, store nothing.")
def apply_cmd(file: Path | None, database_url: str | None, applied_by: str | None, dry_run: bool) -> None:
    """Check FILE, show the diff against the active version, store it as the new active version."""
    from routing.store import active_source, apply_ruleset, sha256_of

    ruleset, source, path = _load(file)
    url = _connected(database_url)
    current = active_source(url)
    if current is not None and sha256_of(current[1]) == sha256_of(source):
        click.echo(f"no change: version {current[0]} already has this file ({_summary(ruleset)})")
        return
    old_label = f"version {current[0]}" if current else "nothing applied"
    diff = list(difflib.unified_diff((current[1] if current else "").splitlines(keepends=True),
                                     source.splitlines(keepends=True), fromfile=old_label, tofile=str(path)))
    click.echo("".join(diff).rstrip("\n"))
    if dry_run:
        click.echo(f"dry run: {_summary(ruleset)}, nothing stored")
        return
    who = applied_by or _login()
    version = apply_ruleset(url, ruleset, source, who)
    click.echo(f"applied version {version}: {_summary(ruleset)} (by {who or 'unknown'})")


def _login() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


@routing_group.command("show")
@database_option
def show_cmd(database_url: str | None) -> None:
    """Print the active version's file."""
    from routing.store import active_source

    current = active_source(_connected(database_url))
    if current is None:
        raise click.ClickException("no routing rules applied yet (ivr routing apply)")
    click.echo(f"# version {current[0]}")
    click.echo(current[1].rstrip("\n"))


@routing_group.command("history")
@database_option
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
def history_cmd(database_url: str | None, limit: int) -> None:
    """Applied versions, newest first; * marks the one in force."""
    from routing.store import list_versions

    versions = list_versions(_connected(database_url), limit)
    if not versions:
        click.echo("no routing rules applied yet")
        return
    for v in versions:
        click.echo(f"{'*' if v.active else ' '} {v.id:>4}  {v.applied_at.astimezone():%Y-%m-%d %H:%M:%S}  "
                   f"by {v.applied_by or '-'}  {v.rules} rules, {v.departments} departments  sha256 {v.sha256[:12]}")


@routing_group.command("rollback")
@database_option
@click.argument("version", type=int)
def rollback_cmd(database_url: str | None, version: int) -> None:
    """Put VERSION (see history) in force again."""
    from routing.store import rollback

    url = _connected(database_url)
    try:
        ruleset = rollback(url, version)
    except KeyError:
        raise click.ClickException(f"no version {version} (see ivr routing history)") from None
    click.echo(f"version {version} is active again: {_summary(ruleset)}")


@routing_group.command("explain")
@file_argument
@click.option("--known/--unknown", default=None, help="Known client (default: known if any client fact is given).")
@click.option("--segment", default=None)
@click.option("--stage", default=None)
@click.option("--deals", "deals_count", default=0, type=click.IntRange(0))
@click.option("--department", default=None, help="The client's owning department code.")
@click.option("--assigned", "assigned_operator", default=None, metavar="EXT", help="Assigned operator's extension.")
@click.option("--active-sales", "active_sales_manager", default=None, metavar="EXT",
              help="Extension of the active-sales manager who called him.")
@click.option("--topic", default=None, help="Topic chosen in the menu.")
@click.option("--degraded", is_flag=True, help="As if the database could not be asked.")
@click.option("--at", "at", default=None, metavar="ISO",
              help="Time of the call, e.g. 2027-01-07T10:00+03:00 (default: now).")
def explain_cmd(file: Path | None, known: bool | None, segment: str | None, stage: str | None, deals_count: int,
                department: str | None, assigned_operator: str | None, active_sales_manager: str | None,
                topic: str | None, degraded: bool, at: str | None) -> None:
    """What FILE decides for a caller described by the options (nothing is stored)."""
    from routing.facts import CallerFacts

    ruleset, _source, _path = _load(file)
    try:
        now = datetime.fromisoformat(at) if at else datetime.now().astimezone()
    except ValueError:
        raise click.BadParameter(f"{at!r} is not an ISO date-time", param_hint="--at") from None
    if now.tzinfo is None:
        now = now.replace(tzinfo=datetime.now().astimezone().tzinfo)
    if known is None:
        known = any((segment, stage, deals_count, department, assigned_operator, active_sales_manager))
    facts = CallerFacts(
        e164="+70000000000", client_id=1 if known and not degraded else None, segment=segment, stage=stage,
        deals_count=deals_count, department=department, assigned_operator=assigned_operator,
        active_sales_manager=active_sales_manager, topic=topic, degraded=degraded)
    decision = ruleset.decide(facts, now)
    click.echo(f"rule: {decision.rule}")
    click.echo(f"department: {decision.department}" + (" (degraded)" if decision.degraded else ""))
    if decision.closed:
        click.echo(f"closed, reopens {decision.reopens_at or 'never (within a year)'}")
    if decision.menu is not None:
        options = ", ".join(f"{o.digit}={o.topic}" for o in decision.menu.options)
        click.echo(f"menu: {' '.join(decision.menu.prompt)} -> {options}; "
                   f"default {decision.menu.default_topic or 'none'} after {decision.menu.timeout:g}s")
    for number, step in enumerate(decision.steps, 1):
        who = f"operator {step.operator} of {step.department}" if step.operator else step.department
        click.echo(f"step {number}: {step.kind:<12} {who} for {step.timeout:g}s"
                   + (" (reaction standard)" if step.reaction_standard else ""))
    for line in decision.trail:
        click.echo(f"  why: {line}")
