"""``ivr demo``: bring the whole stack up, place real SIP calls, tell what happened.

Three calls to the public number from a sipp phone, each showing one path of the greeting flow:
the caller presses 1; the caller presses nothing; the caller hangs up during the greeting.
For each call the account shows the calls-table row and the controller's log lines of that call.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click

from ivr.config import DEFAULT_ENV_FILE, ConfigError, Settings, generate_env_file, load_settings
from ivr.runner import ControllerProcess, stop_controller
from models.db import mask_url


@dataclass(frozen=True)
class DemoCall:
    title: str
    caller_id: str
    dtmf: str = ""
    dtmf_delay: float = 1.5
    hangup_after: float | None = None
    hold_after: float = 2.0


DEMO_CALLS = (
    DemoCall("Caller presses 1 during the greeting", "+79161234501", dtmf="1", dtmf_delay=0.5, hold_after=4.0),
    DemoCall("Caller presses nothing", "+79161234502", hold_after=12.0),
    DemoCall("Caller hangs up during the greeting", "+79161234503", hangup_after=0.8),
)


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


async def _place_calls(settings: Settings, workdir: Path) -> list[tuple[DemoCall, object, float]]:
    from ivr.phones.sipp import SippCaller

    results = []
    number = settings.public_number.lstrip("+")
    for call in DEMO_CALLS:
        phone = SippCaller(settings.bind_host, settings.sip_port, caller_id=call.caller_id.lstrip("+"),
                           caller_name="Demo", workdir=workdir)
        started = time.time()
        result = await phone.call(number, dtmf=call.dtmf, dtmf_delay=call.dtmf_delay, hangup_after=call.hangup_after,
                                  hold_after=call.hold_after, timeout=40)
        results.append((call, result, started))
        await asyncio.sleep(1.0)  # let the controller finish the call record
    return results


def _account(settings: Settings, controller: ControllerProcess, placed) -> list[str]:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from ivr.cli import format_call
    from models.db import make_engine
    from models.tables import Call

    lines: list[str] = []
    log_text = controller.log_text()
    engine = make_engine(settings.database_url)
    ok = 0
    with Session(engine) as session:
        for call, result, _ in placed:
            row = session.scalar(
                select(Call).where(Call.from_e164 == call.caller_id).order_by(Call.started_at.desc()).limit(1))
            lines.append("")
            lines.append(f"── {call.title} (phone {call.caller_id}, SIP final status {getattr(result, 'status', '?')})")
            if row is None:
                lines.append("   no row in the calls table - see the controller log")
                continue
            ok += 1
            lines.append("   " + format_call(row).replace("\n", "\n   "))
            for log_line in log_text.splitlines():
                if f"call_id={row.call_uid}" in log_line:
                    lines.append("   log: " + log_line.split(" level=", 1)[0][11:23] + " "
                                 + log_line.split(f"call_id={row.call_uid} ", 1)[-1])
    engine.dispose()
    lines.append("")
    lines.append(f"{ok} of {len(placed)} demo calls are in the calls table.")
    return lines


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
        click.echo(f"• Calling the public number {settings.public_number} from a sipp phone, {len(DEMO_CALLS)} calls")
        with tempfile.TemporaryDirectory(prefix="ivr-demo-") as tmp:
            placed = asyncio.run(_place_calls(settings, Path(tmp)))
        account = _account(settings, controller, placed)
        for line in account:
            click.echo(line)
        failed = any(line.startswith("   no row") for line in account)
    finally:
        if keep:
            click.echo(f"\nStack left running (instance '{settings.asterisk_instance}'). "
                       "Stop it with: .cache/venv/bin/ivr stack down")
        else:
            controller.stop()
            instance.stop()
            click.echo("\nStack stopped. Run `scripts/demo --keep` to leave it running.")
    if failed:
        raise click.ClickException("some demo calls were not recorded")
