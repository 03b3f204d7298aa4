"""The demo's sales floor and its scenes (used by ``ivr demo``).

Everything goes through the product's own commands (`ivr routing apply`, `ivr clients import`,
`ivr operator ...`, `ivr calls --today`, ...) and real SIP calls, so the demo shows what an admin
and a caller would see.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click

from ivr.config import PROJECT_ROOT, Settings
from models.db import run_sql as _sql

RULES_FILE = PROJECT_ROOT / "docs" / "examples" / "rules-demo.yaml"
CLIENTS_FILE = PROJECT_ROOT / "docs" / "examples" / "clients.csv"

# extension -> (name, department, how the phone behaves)
OPERATORS = {
    "201": ("Анна Смирнова", "current_sales", "answer"),
    "202": ("Борис Козлов", "current_sales", "answer"),
    "203": ("Вера Попова", "current_sales", "ring"),      # picks up nothing today
    "301": ("Глеб Орлов", "active_sales", "answer"),
    "302": ("Дарья Волкова", "active_sales", "answer"),
    "401": ("Егор Лебедев", "current_service", "answer"),
    "402": ("Жанна Новикова", "current_service", "answer"),
    "501": ("Зоя Морозова", "retail", "answer"),
}


@dataclass(frozen=True)
class Scene:
    title: str
    caller: str            # caller ID the carrier sends (digits)
    expect_operator: set[str]
    expect_rule: str
    hold: float = 3.0


SCENES = (
    Scene("A number nobody knows calls: current sales answers, a client card is created",
          "", {"201", "202"}, "unknown_caller"),  # a new random number on every run
    Scene("Ольга Игоревна, called by active-sales manager 301 yesterday, calls back: 301 answers",
          "73432102030", {"301"}, "called_back_by_active_sales"),
    Scene("Пётр Николаевич (42 deals, manager 201) calls: his manager answers, card on the phone",
          "79161234567", {"201"}, "client_with_deals"),
    Scene("A retail buyer calls: the retail floor answers", "79035550011", {"501"}, "retail_buyers"),
    Scene("Сергей Олегович's manager 203 does not pick up within the 5 s standard: escalation to "
          "current service, violation, 203 auto-paused", "73832201122", {"401", "402"}, "client_with_deals",
          hold=14.0),
)


def _cli(*args: str) -> bool:
    """Run an `ivr` command in-process, printing its output as an admin would see it."""
    from ivr.cli import main

    click.secho("$ ivr " + " ".join(args), fg="cyan")
    try:
        main.main(list(args), prog_name="ivr", standalone_mode=False)
        return True
    except click.ClickException as exc:
        exc.show()
        return False
    except SystemExit as exc:
        return exc.code in (0, None)


async def cli(*args: str) -> bool:
    # The commands run their own event loops (asyncio.run): keep them off the demo's loop.
    return await asyncio.to_thread(_cli, *args)




async def _wait_row(url: str, e164: str, since: datetime, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = await asyncio.to_thread(
            _sql, url, "SELECT c.rule, c.result, o.extension FROM calls c LEFT JOIN operators o "
                       "ON o.id = c.answered_by_operator_id WHERE c.from_e164 = :p AND c.started_at >= :t "
                       "AND c.ended_at IS NOT NULL ORDER BY c.started_at DESC LIMIT 1", p=e164, t=since)
        if rows:
            return rows[0]
        await asyncio.sleep(0.3)
    return None


async def run_scenes(settings: Settings, workdir: Path, instance, controller) -> bool:
    from ivr.phones.sipp import SippAnswerer, SippCaller
    from ivr.stack.operators import sync_operators

    url = settings.database_url
    db = ["--database-url", url]
    ok = True
    click.echo("\n• The rules an admin applies (checked, diffed, stored as a version):")
    ok &= await cli("routing", "apply", str(RULES_FILE), *db, "--by", "demo")

    click.echo("\n• The sales floor: operators' phones are sipp answering phones")
    phones: dict[str, SippAnswerer] = {}
    try:
        for ext, (name, dept, mode) in OPERATORS.items():
            phone = await SippAnswerer(mode=mode, hold=2.0, workdir=workdir).start()
            phones[ext] = phone
            exists = await asyncio.to_thread(_sql, url, "SELECT 1 FROM operators WHERE extension = :e", e=ext)
            if exists:
                await asyncio.to_thread(
                    _sql, url, "UPDATE operators SET sip_contact = :c, name = :n, department_id = "
                               "(SELECT id FROM departments WHERE code = :d) WHERE extension = :e",
                    c=phone.uri, n=name, d=dept, e=ext)
            else:
                await cli("operator", "add", name, ext, dept, "--contact", phone.uri, *db)
        await asyncio.to_thread(_sql, url, "UPDATE operators SET status = 'available', pause_reason = NULL "
                                           "WHERE extension = ANY(:e)", e=list(OPERATORS))
        ok &= await cli("operator", "pause", "203", "--reason", "обед", *db)
        count = await asyncio.to_thread(sync_operators, settings, url)
        click.echo(f"  {count} operator phones written into PJSIP and reloaded (ivr stack sync-operators)")

        click.echo("\n• Clients from the accounting system's export (line 10 is deliberately bad):")
        await cli("clients", "import", str(CLIENTS_FILE), *db)
        await asyncio.to_thread(
            _sql, url, "INSERT INTO contacts (client_id, operator_id, direction, at, result) "
                       "SELECT p.client_id, o.id, 'outbound', now() - interval '1 day', 'answered' "
                       "FROM client_phones p, operators o WHERE p.e164 = '+73432102030' AND o.extension = '301' "
                       "AND NOT EXISTS (SELECT 1 FROM contacts c WHERE c.client_id = p.client_id "
                       "AND c.at > now() - interval '2 days')")
        await asyncio.sleep(1.5)  # the controller picks up the new rules version

        number = settings.public_number.lstrip("+")
        for i, scene in enumerate(SCENES, 1):
            click.echo(f"\n── Scene {i}: {scene.title}")
            if scene.expect_rule == "client_with_deals" and "203" in OPERATORS and i == len(SCENES):
                await cli("operator", "rejoin", "203", *db)
            started = datetime.now(timezone.utc) - timedelta(seconds=1)
            if not scene.caller:
                scene = dataclasses.replace(scene, caller="7916" + str(secrets.randbelow(10**7)).zfill(7))
            caller = SippCaller(settings.bind_host, settings.sip_port, caller_id=scene.caller, workdir=workdir)
            result = await caller.call(number, hold_after=scene.hold, timeout=20, raise_on_error=False)
            row = await _wait_row(url, "+" + scene.caller, started)
            if row is None:
                click.secho(f"   no call row for +{scene.caller} (SIP status {result.status})", fg="red")
                ok = False
                continue
            good = row.extension in scene.expect_operator and row.rule == scene.expect_rule
            ok &= good
            click.secho(f"   rule {row.rule}, answered by {row.extension or 'nobody'} ({row.result})"
                        f" {'✓' if good else '✗ expected ' + '/'.join(sorted(scene.expect_operator))}",
                        fg="green" if good else "red")

        click.echo("\n── Scene 6: Вера (203) comes back from her auto-pause with *45 on her phone")
        secret = (await asyncio.to_thread(_sql, url, "SELECT sip_secret FROM operators WHERE extension = '203'"))[0][0]
        feature = SippCaller(settings.bind_host, settings.sip_port, caller_id="203", workdir=workdir,
                             auth=("203", secret))
        await feature.call("*45", hold_after=4, timeout=5, raise_on_error=False)
        await asyncio.sleep(0.5)
        status = (await asyncio.to_thread(_sql, url, "SELECT status FROM operators WHERE extension = '203'"))[0][0]
        click.secho(f"   203 is now {status} {'✓' if status == 'available' else '✗'}",
                    fg="green" if status == "available" else "red")
        ok &= status == "available"

        click.echo("\n• The account")
        today = datetime.now().strftime("%Y-%m-%d")
        await cli("calls", "--today", *db)
        await cli("report", "violations", "--since", today, *db)
        await cli("operator", "list", *db)
        await cli("operator", "events", "203", *db)
        await cli("client", "show", "8 (916) 123-45-67", *db)
    finally:
        for phone in phones.values():
            await phone.stop()
    return ok
