"""``ivr demo``: bring the whole stack up, staff a sales floor, place real SIP calls, tell what
happened.

The floor (ivr/demo_floor.py): the demo rules (docs/examples/rules-demo.yaml: the company's
rules, open around the clock, short timers), eight operators whose phones are sipp answering
phones, the clients of docs/examples/clients.csv imported like an accounting-system export.
Then six scenes, each a real call to the public number (or from an operator's phone), and the
account: the decision trail of every call (`ivr calls --today`), violations, operator states and
one client card.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import click

from ivr.config import DEFAULT_ENV_FILE, ConfigError, Settings, generate_env_file, load_settings
from ivr.runner import ControllerProcess, stop_controller
from models.db import mask_url


def bring_up(settings: Settings, echo=click.echo) -> tuple[Settings, object]:
    """Asterisk image + instance, database, migrations. Returns (settings with the DB URL, instance)."""
    from ivr.stack.asterisk import AsteriskInstance
    from ivr.stack.postgres import ensure_database
    from models.migrate import upgrade

    echo("• Postgres: looking for a server (DATABASE_URL, else 127.0.0.1:5432, else a private cluster)")
    url = ensure_database(settings)
    settings = settings.with_overrides(database_url=url)
    upgrade(url)
    echo(f"  database {mask_url(url)} migrated to the latest schema")
    instance = AsteriskInstance(settings)
    echo("• Asterisk 22: cached chroot image (built with mmdebstrap from Debian forky on first run)")
    instance.ensure_image()
    instance.install_config()
    instance.start()
    echo(f"  instance '{settings.asterisk_instance}' up: SIP udp {settings.bind_host}:{settings.sip_port}, "
         f"ARI {settings.ari_url}, AMI {settings.bind_host}:{settings.ami_port}")
    return settings, instance


@click.command("demo")
@click.option("--keep", is_flag=True, help="leave Asterisk and the controller running afterwards")
def demo_command(keep: bool) -> None:
    """Bring the stack up, place demo calls with a real SIP phone, print an account of them."""
    generate_env_file(DEFAULT_ENV_FILE)
    try:
        settings = load_settings()
        settings.require_secrets()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    settings, instance = bring_up(settings)
    stop_controller(settings)  # one left by an earlier --keep
    controller = ControllerProcess(settings).start(detached=keep)
    failed = False
    try:
        health = controller.wait_healthy(timeout=40)
        click.echo(f"• Controller up: ARI app '{settings.ari_app}', health {health['ok']}, "
                   f"log {controller.log_path}")
        from ivr.demo_floor import run_scenes

        from ivr.demo_floor import cli
        from ivr.demo_robot import run_robot_scenes

        with tempfile.TemporaryDirectory(prefix="ivr-demo-") as tmp:
            failed = not asyncio.run(run_scenes(settings, Path(tmp), instance, controller))
            click.echo("\n═══ The confirmation robot ═══")
            failed |= not asyncio.run(run_robot_scenes(settings, Path(tmp), cli))
    finally:
        if keep:
            click.echo(f"\nStack left running (instance '{settings.asterisk_instance}'). "
                       "Stop it with: .cache/venv/bin/ivr stack down")
        else:
            controller.stop()
            instance.stop()
            click.echo("\nStack stopped. Run `scripts/demo --keep` to leave it running.")
    if failed:
        raise click.ClickException("some demo scenes did not go as expected (see above)")
