"""``ivr stack``: provision and run the Asterisk + PostgreSQL stack.

Secrets are never printed: they live in var/ivr.env (mode 0600), created by ``ivr stack init``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ivr.config import DEFAULT_ENV_FILE, ConfigError, Settings, generate_env_file, load_settings


def _env_file() -> Path:
    return Path(os.environ.get("IVR_ENV_FILE", DEFAULT_ENV_FILE))


def _settings(instance: str | None) -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if instance:
        from ivr.config import _NAME_RE  # same rule as IVR_ASTERISK_INSTANCE

        if not _NAME_RE.fullmatch(instance):
            raise click.ClickException(f"--instance {instance!r}: use letters, digits, '_' and '-'")
        settings = settings.with_overrides(asterisk_instance=instance)
    return settings


def _fail(exc: Exception) -> "click.ClickException":
    return click.ClickException(str(exc))


instance_option = click.option("--instance", default=None, metavar="NAME",
                               help="Asterisk instance name (default: IVR_ASTERISK_INSTANCE or 'main').")


@click.group("stack")
def stack_group() -> None:
    """Provision and run the stack: Asterisk (private chroot instance) and PostgreSQL."""


@stack_group.command("init")
def init_cmd() -> None:
    """Create var/ivr.env with fresh random secrets (keeps existing values)."""
    path = _env_file()
    existed = path.exists()
    generate_env_file(path)
    click.echo(f"{'kept' if existed else 'created'} {path} (secrets inside; mode 0600)")


@stack_group.command("up")
@instance_option
@click.option("--no-controller", "with_controller", flag_value=False, default=True,
              help="Start Asterisk and the database only, not ivr-controller.")
def up_cmd(instance: str | None, with_controller: bool) -> None:
    """Init if needed, build the Asterisk image, find/create and migrate the database, configure
    and start Asterisk, then start ivr-controller in the background."""
    from ivr.runner import ControllerProcess, stop_controller
    from ivr.stack.asterisk import AsteriskInstance, StackError
    from ivr.stack.postgres import DatabaseError, ensure_database
    from models.db import mask_url
    from models.migrate import DatabaseUnavailable, upgrade

    if not _env_file().exists() and not os.environ.get("IVR_ARI_PASSWORD"):
        generate_env_file(_env_file())
        click.echo(f"created {_env_file()} with fresh secrets")
    settings = _settings(instance)
    try:
        settings.require_secrets()
        asterisk = AsteriskInstance(settings)
        click.echo(f"Asterisk image: {asterisk.root}" + ("" if asterisk.image_ready() else " (building, ~30 s)"))
        asterisk.ensure_image()
        url = ensure_database(settings)
        click.echo(f"database: {mask_url(url)}")
        upgrade(url)
        click.echo("database schema: migrated to the latest revision")
        if asterisk.is_running():
            click.echo(f"instance {asterisk.name!r} already running; checking it")
        else:
            from ivr.stack.operators import load_operator_endpoints

            asterisk.install_config(load_operator_endpoints(url))
        asterisk.start()
        settings = settings.with_overrides(database_url=url)
        if with_controller:
            stop_controller(settings)  # restart so it picks up the current code and settings
            controller = ControllerProcess(settings).start(detached=True)
            controller.wait_healthy(timeout=40)
    except (StackError, DatabaseError, ConfigError, DatabaseUnavailable, RuntimeError) as exc:
        raise _fail(exc) from None
    click.echo(f"Asterisk instance {asterisk.name!r} is up")
    if with_controller:
        click.echo(f"  controller: pid {controller.proc.pid}, health http://{settings.bind_host}:"
                   f"{settings.health_port}/health, log {controller.log_path}")
    click.echo(f"  ARI:    {settings.ari_url}/ari (user {settings.ari_user}, app {settings.ari_app})")
    click.echo(f"  AMI:    {settings.bind_host}:{settings.ami_port} (user {settings.ami_user})")
    click.echo(f"  SIP:    udp {settings.bind_host}:{settings.sip_port} (carrier from {settings.carrier_match}, "
               f"outbound to {settings.carrier_host}:{settings.carrier_port})")
    click.echo(f"  public number: {settings.public_number}")
    click.echo(f"  log:    {asterisk.log_file}")


@stack_group.command("sync-operators")
@instance_option
def sync_operators_cmd(instance: str | None) -> None:
    """Write the operators' phones (PJSIP endpoints, extensions) from the database into the
    instance's config and reload PJSIP and the dialplan (calls in progress are kept)."""
    from ivr.stack.asterisk import StackError
    from ivr.stack.operators import sync_operators
    from ivr.stack.postgres import DatabaseError, ensure_database

    settings = _settings(instance)
    try:
        settings.require_secrets()
        count = sync_operators(settings, ensure_database(settings))
    except (StackError, DatabaseError, ConfigError) as exc:
        raise _fail(exc) from None
    click.echo(f"{count} operator phone(s) written and reloaded")


@stack_group.command("down")
@instance_option
def down_cmd(instance: str | None) -> None:
    """Stop ivr-controller and the Asterisk instance (the database is left running)."""
    from ivr.runner import stop_controller
    from ivr.stack.asterisk import AsteriskInstance, StackError

    settings = _settings(instance)
    if stop_controller(settings) is not None:
        click.echo("controller stopped")
    asterisk = AsteriskInstance(settings)
    was = asterisk.is_running()
    try:
        asterisk.stop()
    except StackError as exc:
        raise _fail(exc) from None
    click.echo(f"instance {asterisk.name!r} {'stopped' if was else 'was not running'}")


@stack_group.command("status")
@instance_option
def status_cmd(instance: str | None) -> None:
    """Is the instance running, which Asterisk version, how many channels."""
    from ivr.stack.asterisk import AsteriskInstance

    asterisk = AsteriskInstance(_settings(instance))
    st = asterisk.status()
    if not st["running"]:
        click.echo(f"instance {st['instance']!r}: not running")
        sys.exit(3)
    click.echo(f"instance {st['instance']!r}: running (pid {st.get('pid')})")
    click.echo(f"  ARI {st['ari_url']}: " + (f"Asterisk {st['version']}" if st.get("version") else st.get("error", "?")))
    click.echo(f"  channels: {st.get('channels', '?')}")


@stack_group.command("config")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory to render the config into.")
@instance_option
def config_cmd(out_dir: Path, instance: str | None) -> None:
    """Render the Asterisk config only (private-instance layout)."""
    from ivr.stack.render import render_config

    try:
        paths = render_config(_settings(instance), out_dir)
    except ConfigError as exc:
        raise _fail(exc) from None
    for p in paths:
        click.echo(str(p))


@stack_group.command("install-system")
@click.option("--etc-dir", default="/etc/asterisk", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Show what would change (secrets masked); write nothing.")
@click.option("--no-backup", is_flag=True, help="Do not copy the existing config to asterisk.backup-<timestamp>/.")
def install_system_cmd(etc_dir: Path, dry_run: bool, no_backup: bool) -> None:
    """Install the product's config into a system Asterisk (then: asterisk -rx 'core restart now')."""
    from ivr.stack.asterisk import diff_system, install_system

    settings = _settings(None)
    try:
        changes = install_system(settings, etc_dir=etc_dir, backup=not no_backup, dry_run=dry_run)
        if dry_run:
            click.echo(diff_system(settings, etc_dir), nl=False)
    except (ConfigError, OSError) as exc:
        raise _fail(exc) from None
    for name, what in changes:
        click.echo(f"{what:>9}  {etc_dir / name}")
    if dry_run:
        click.echo("dry run: nothing written")
    else:
        click.echo("installed; restart Asterisk to apply: asterisk -rx 'core restart gracefully'")
