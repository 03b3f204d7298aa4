"""``ivr dialplan``: render, check, diff, apply, history, show, rollback the Asterisk
configuration (templates in asterisk-conf/ and dialplans/ + operators from the database)."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

import click

from ivr.clitools import database_option, resolve_database_url
from ivr.config import ConfigError

instance_option = click.option("--instance", default=None, metavar="NAME",
                               help="Asterisk instance (default: IVR_ASTERISK_INSTANCE or 'main').")
templates_option = click.option(
    "--templates", "template_dirs", multiple=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Admin template folder searched before asterisk-conf/ and dialplans/ (repeatable; "
         "default: IVR_DIALPLAN_TEMPLATES in the environment or var/ivr.env, ':'-separated).")


def _template_dirs(given: tuple[Path, ...]) -> list[Path]:
    from ivr.stack.render import default_template_dirs

    return list(given) if given else default_template_dirs()


def _settings(instance: str | None):
    from ivr.stack.cli import _settings as stack_settings

    settings = stack_settings(instance)
    try:
        settings.require_secrets()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    return settings


def _connected(explicit: str | None) -> str:
    from models.migrate import DatabaseUnavailable, check_connection

    url = resolve_database_url(explicit)
    try:
        check_connection(url)
    except DatabaseUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    return url


def _render(settings, url: str, template_dirs):
    from ivr.dialplan.apply import render_live

    try:
        return render_live(settings, url, template_dirs)
    except ConfigError as exc:
        raise click.ClickException(f"render failed, nothing written: {exc}") from None


def _login() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


@click.group("dialplan")
def dialplan_group() -> None:
    """The Asterisk configuration: render, check, diff, apply, history, rollback."""


@dialplan_group.command("render")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the files into (default: <state dir>/dialplan-rendered).")
@templates_option
@instance_option
@database_option
def render_cmd(out_dir: Path | None, template_dirs, instance: str | None, database_url: str | None) -> None:
    """Render every config file from the templates and the database (operators' endpoints with
    generated secrets, feature codes, the trunk, the public number)."""
    from ivr.dialplan.files import write_dir

    settings = _settings(instance)
    files, operators = _render(settings, _connected(database_url), _template_dirs(template_dirs))
    out_dir = out_dir or Path(settings.state_dir) / "dialplan-rendered"
    write_dir(files, out_dir, remove_others=True)
    click.echo(f"{len(files)} files, {len(operators)} operator endpoint(s) -> {out_dir}")


@dialplan_group.command("check")
@click.argument("directory", required=False, type=click.Path(file_okay=False, exists=True, path_type=Path))
@templates_option
@instance_option
@database_option
def check_cmd(directory: Path | None, template_dirs, instance: str | None, database_url: str | None) -> None:
    """Load DIRECTORY (default: a fresh render) into a throw-away Asterisk on other ports; fail
    on any error or warning in its log and on anything the product relies on that is missing."""
    from ivr.dialplan.apply import expectations
    from ivr.dialplan.check import check_files
    from ivr.dialplan.files import read_dir
    from ivr.stack.asterisk import StackError

    settings = _settings(instance)
    if directory is not None:
        files = read_dir(directory)
        if not files:
            raise click.ClickException(f"no *.conf files in {directory}")
    else:
        files, _ops = _render(settings, _connected(database_url), _template_dirs(template_dirs))
    expect = expectations(settings, files)
    try:
        result = check_files(settings, files, expect)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    for problem in result.problems:
        click.echo(f"FAIL {problem}", err=True)
    if not result.ok:
        raise click.ClickException(f"check failed: {len(result.problems)} problem(s) ({result.seconds:.1f}s, "
                                   f"instance {result.instance})")
    click.echo(f"ok: {len(files)} files load cleanly; public number {settings.public_number} enters Stasis, "
               f"feature codes {', '.join(expect.feature_codes)}, {len(expect.operators)} operator endpoint(s) "
               f"({result.seconds:.1f}s, instance {result.instance})")


@dialplan_group.command("diff")
@templates_option
@instance_option
@database_option
def diff_cmd(template_dirs, instance: str | None, database_url: str | None) -> None:
    """Unified diff: what is live in the instance's etc folder -> what would be applied (secrets
    masked). Exit code 1 when they differ."""
    from ivr.dialplan.files import diff, read_dir, secrets_in, secrets_of
    from ivr.stack.asterisk import AsteriskInstance

    settings = _settings(instance)
    files, operators = _render(settings, _connected(database_url), _template_dirs(template_dirs))
    live = read_dir(AsteriskInstance(settings).etc_dir)
    text = diff(live, files, [*secrets_of(settings, operators), *secrets_in(live)])
    if not text:
        click.echo("no difference: the rendered configuration is live")
        return
    click.echo(text, nl=False)
    sys.exit(1)


def _report_apply(result, what: str) -> None:
    if result.version is None:
        click.echo("no change: the rendered configuration is already live")
        return
    click.echo(result.diff, nl=False)
    check = f", check {result.check.seconds:.1f}s" if result.check else ""
    click.echo(f"{what} version {result.version}: {len(result.changed)} file(s) changed "
               f"({', '.join(result.changed)}); reloaded: {'; '.join(result.reloads) or 'nothing'}; "
               f"smoke check ok{check}; {result.seconds:.1f}s in all")


def _apply_errors(exc: Exception) -> "click.ClickException":
    from ivr.dialplan.apply import ApplyRefused, ApplyRolledBack

    if isinstance(exc, ApplyRefused):
        for problem in exc.problems:
            click.echo(f"FAIL {problem}", err=True)
        return click.ClickException(f"refused, nothing applied: {exc}")
    if isinstance(exc, ApplyRolledBack):
        for problem in exc.problems:
            click.echo(f"FAIL {problem}", err=True)
        for problem in exc.after_rollback:
            click.echo(f"STILL FAILING AFTER ROLLBACK {problem}", err=True)
        return click.ClickException(str(exc).split(":")[0] + "; the previous configuration is live again")
    return click.ClickException(str(exc))


@dialplan_group.command("apply")
@click.option("--by", "applied_by", default=None, help="Who applies (default: the login name).")
@click.option("--no-check", is_flag=True, help="Skip the throw-away instance check (the smoke check still runs).")
@click.option("--smoke-call", is_flag=True,
              help="Also place a real SIP call (sipp) to the greeting self-test number after the reload; "
                   "needs the controller running.")
@templates_option
@instance_option
@database_option
def apply_cmd(applied_by: str | None, no_check: bool, smoke_call: bool, template_dirs, instance: str | None,
              database_url: str | None) -> None:
    """Render, check, write into the live instance, reload the changed modules over AMI,
    smoke-check (the public number enters Stasis, feature codes, every operator endpoint);
    roll back automatically if the smoke check fails. Every apply is stored."""
    from ivr.dialplan.apply import ApplyRefused, ApplyRolledBack, apply, sipp_smoke
    from ivr.stack.asterisk import StackError

    settings = _settings(instance)
    url = _connected(database_url)
    try:
        result = apply(settings, url, applied_by=applied_by or _login(),
                       template_dirs=_template_dirs(template_dirs), check=not no_check,
                       smoke=sipp_smoke(settings) if smoke_call else None)
    except ConfigError as exc:
        raise click.ClickException(f"render failed, nothing applied: {exc}") from None
    except (ApplyRefused, ApplyRolledBack, StackError) as exc:
        raise _apply_errors(exc) from None
    _report_apply(result, "applied")


@dialplan_group.command("history")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@instance_option
@database_option
def history_cmd(limit: int, instance: str | None, database_url: str | None) -> None:
    """Applied versions of the instance, newest first; * marks the one in force."""
    from ivr.dialplan.store import list_versions

    settings = _settings(instance)
    versions = list_versions(_connected(database_url), settings.asterisk_instance, limit)
    if not versions:
        click.echo(f"nothing applied to instance {settings.asterisk_instance!r} yet")
        return
    for v in versions:
        extra = f"  rollback of {v.rollback_of}" if v.rollback_of else ""
        why = f"  ({v.problems.splitlines()[0][:120]})" if v.problems else ""
        click.echo(f"{'*' if v.active else ' '} {v.id:>4}  {v.applied_at.astimezone():%Y-%m-%d %H:%M:%S}  "
                   f"by {v.applied_by or '-'}  {v.outcome:<11}  {v.changed} file(s)  "
                   f"sha256 {v.sha256[:12]}{extra}{why}")


@dialplan_group.command("show")
@click.argument("version", type=int)
@click.option("--file", "file_name", default=None, help="Print this file of the version instead of its diff.")
@database_option
def show_cmd(version: int, file_name: str | None, database_url: str | None) -> None:
    """Print a version's diff (or one of its files, secrets masked)."""
    from ivr.dialplan.files import mask, secrets_in
    from ivr.dialplan.store import get_version

    row = get_version(_connected(database_url), version)
    if row is None:
        raise click.ClickException(f"no version {version} (see ivr dialplan history)")
    click.echo(f"# version {row.id} on {row.instance} by {row.applied_by or '-'} at "
               f"{row.applied_at.astimezone():%Y-%m-%d %H:%M:%S}: {row.outcome}")
    if file_name:
        if file_name not in row.files:
            raise click.ClickException(f"version {version} has no {file_name}")
        click.echo(mask(row.files[file_name], secrets_in(row.files)), nl=False)
    else:
        if row.problems:
            click.echo("# problems:\n" + "\n".join(f"#   {p}" for p in row.problems.splitlines()))
        click.echo(row.diff, nl=False)


@dialplan_group.command("rollback")
@click.argument("version", type=int)
@click.option("--by", "applied_by", default=None, help="Who rolls back (default: the login name).")
@click.option("--no-check", is_flag=True, help="Skip the throw-away instance check.")
@instance_option
@database_option
def rollback_cmd(version: int, applied_by: str | None, no_check: bool, instance: str | None,
                 database_url: str | None) -> None:
    """Apply VERSION's files again (checked, reloaded, smoke-checked; stored as a new version)."""
    from ivr.dialplan.apply import ApplyRefused, ApplyRolledBack, rollback
    from ivr.stack.asterisk import StackError

    settings = _settings(instance)
    url = _connected(database_url)
    try:
        result = rollback(settings, url, version, applied_by=applied_by or _login(), check=not no_check)
    except KeyError:
        raise click.ClickException(f"no version {version} for instance {settings.asterisk_instance!r} "
                                   f"(see ivr dialplan history)") from None
    except (ApplyRefused, ApplyRolledBack, StackError) as exc:
        raise _apply_errors(exc) from None
    _report_apply(result, f"rolled back to {version} as")
