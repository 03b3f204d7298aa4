"""The demo's confirmation-robot scenes (used by ``ivr demo``): the CRM asks for three
notifications over the HTTP API, the robot (``ivr-robot``) calls a sipp phone behind the carrier
trunk, and the account is printed with the product's own ``ivr notifications`` command.

The robot's clock starts at the next working day 12:00 Moscow (IVR_CLOCK_START) so the demo works
at any hour: a real run calls only inside the client's window (docs/call-window.md).
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import click

from ivr.config import Settings
from ivr.notify.window import CallWindow
from ivr.phones.sipp import SippAnswerer
from ivr.runner import RobotProcess, robot_env
from models.db import run_sql as _sql

MOSCOW = ZoneInfo("Europe/Moscow")
VARS = {"address_name": "Пётр Николаевич", "sent_date": "07.02", "sent_how": "заказным письмом",
        "documents": "бухгалтерские документы за декабрь"}


@dataclass(frozen=True)
class RobotScene:
    title: str
    far_end: dict          # how the client's phone behaves (SippAnswerer arguments)
    expect_status: str
    template: str = "documents_sent"
    variables: dict | None = None


SCENES = (
    RobotScene("The client listens and presses 1: confirmed, the CRM is told",
               dict(mode="answer", dtmf="1", dtmf_delay=4.0, hold=20), "confirmed"),
    RobotScene("The client presses 2 (not received): done with that result, his manager gets a task",
               dict(mode="answer", dtmf="2", dtmf_delay=4.0, hold=20), "not_received"),
    RobotScene("The line is busy: recorded with its cause, retried in 15 minutes",
               dict(mode="busy"), "scheduled"),
    RobotScene("Spoken answers: «Удобно будет, если мы перезвоним вам…?» — «Нет.» — «Когда вам удобнее?» — "
               "«В понедельник утром.»: a callback on Monday morning",
               dict(mode="answer", hold=45, script=[("silence", 4.0), ("speak", "net"), ("silence", 5.0),
                                                     ("speak", "monday"), ("silence", 30.0)]),
               "callback", template="callback_offer", variables={"topic": "ваш новый заказ"}),
)

SPOKEN = {"net": "Нет.", "monday": "В понедельник утром."}


def _festival_wavs(workdir: Path) -> dict[str, Path]:
    """The client's spoken answers, synthesised with Festival (8 kHz) for the demo phone."""
    import subprocess

    out = {}
    for key, text in SPOKEN.items():
        src, wav = workdir / f"{key}.txt", workdir / f"{key}.wav"
        src.write_text(text, encoding="utf-8")
        subprocess.run(["text2wave", "-F", "8000", "-eval", "(voice_msu_ru_nsh_clunits)", str(src), "-o", str(wav)],
                       check=True, timeout=60, capture_output=True)
        out[key] = wav
    return out


def demo_clock() -> datetime:
    """The next working day (Russian calendar) 12:00 Moscow."""
    window = CallWindow()
    day = datetime.now(MOSCOW).date() + timedelta(days=1)
    while not window.is_working_day(day, MOSCOW):
        day += timedelta(days=1)
    return datetime.combine(day, time(12), MOSCOW)


async def _wait_status(url: str, job_id: int, want: str, timeout: float = 60) -> str:
    status = "?"
    for _ in range(int(timeout / 0.5)):
        status = (await asyncio.to_thread(_sql, url, "SELECT status FROM notification_jobs WHERE id = :j",
                                          j=job_id))[0][0]
        if status == want or status in ("confirmed", "not_received", "exhausted", "failed", "expired", "callback",
                                        "handed_over"):
            return status
        await asyncio.sleep(0.5)
    return status


async def run_robot_scenes(settings: Settings, workdir: Path, cli) -> bool:
    token = settings.api_token or secrets.token_urlsafe(24)
    settings = replace(settings, api_token=token, company_name=settings.company_name or "Эни",
                       dialer_client_interval=0.0, dialer_ring_timeout=10)
    clock = demo_clock()
    # an earlier demo's retries (busy -> +15 min) must not ring during this one's scenes
    await asyncio.to_thread(_sql, settings.database_url,
                            "UPDATE notification_jobs SET status = 'cancelled', result = 'cancelled', "
                            "next_attempt_at = NULL WHERE external_id LIKE 'demo-%' "
                            "AND status IN ('pending', 'scheduled', 'no_action')")
    robot = RobotProcess(settings, settings.state_dir / "robot-demo.log",
                         env_overrides=robot_env(settings) | {"IVR_CLOCK_START": clock.isoformat()}).start()
    ok = True
    try:
        await asyncio.to_thread(robot.wait_healthy, 60)
        click.echo(f"• Robot up (ivr-robot): ARI app '{settings.ari_app}-robot-{settings.dialer_worker}', "
                   f"API http://{settings.bind_host}:{settings.api_port}, its clock at {clock:%a %d.%m %H:%M} Moscow, "
                   f"log {robot.log_path}")
        api = f"http://{settings.bind_host}:{settings.api_port}/v1/notifications"
        headers = {"Authorization": f"Bearer {token}"}
        for i, scene in enumerate(SCENES, 1):
            click.echo(f"\n── Robot scene {i}: {scene.title}")
            phone = "7916" + str(secrets.randbelow(10**7)).zfill(7)
            far_end = dict(scene.far_end)
            if "script" in far_end:
                wavs = await asyncio.to_thread(_festival_wavs, workdir)
                far_end["script"] = [(k, wavs[v] if k == "speak" else v) for k, v in far_end["script"]]
            far = await SippAnswerer(listen_port=settings.carrier_port, workdir=workdir / f"scene{i}",
                                     **far_end).start()
            try:
                async with aiohttp.ClientSession() as http:
                    body = {"phone": phone, "template": scene.template, "channel": "call",
                            "variables": dict(VARS) if scene.variables is None else
                            {"address_name": VARS["address_name"], **scene.variables},
                            "external_id": f"demo-{uuid.uuid4().hex[:12]}"}
                    async with http.post(api, json=body, headers=headers) as resp:
                        job = await resp.json()
                        click.echo(f"   CRM → POST /v1/notifications: HTTP {resp.status}, job {job.get('id')}")
                status = await _wait_status(settings.database_url, job["id"], scene.expect_status, timeout=90)
            finally:
                await far.stop()
            rows = await asyncio.to_thread(
                _sql, settings.database_url,
                "SELECT a.cause, a.digits, j.next_attempt_at FROM notification_attempts a "
                "JOIN notification_jobs j ON j.id = a.job_id WHERE a.job_id = :j ORDER BY a.attempt_no DESC LIMIT 1",
                j=job["id"])
            cause, digits, next_at = rows[0] if rows else ("-", None, None)
            said = await asyncio.to_thread(
                _sql, settings.database_url,
                "SELECT u.transcript, u.intent FROM utterances u JOIN notification_attempts a ON a.id = u.attempt_id "
                "WHERE a.job_id = :j ORDER BY u.seq", j=job["id"])
            for transcript, intent in said:
                click.echo(f"   heard «{transcript}» -> {intent}")
            callback = await asyncio.to_thread(_sql, settings.database_url,
                                               "SELECT callback_at FROM notification_jobs WHERE id = :j", j=job["id"])
            if callback and callback[0][0]:
                click.echo(f"   callback agreed for {callback[0][0].astimezone(MOSCOW):%a %d.%m %H:%M} Moscow")
            good = status == scene.expect_status
            ok &= good
            more = f", next attempt {next_at.astimezone(MOSCOW):%d.%m %H:%M} Moscow" if next_at else ""
            click.secho(f"   job {job['id']}: {status}; attempt cause {cause}, keys {digits or '-'}{more} "
                        f"{'✓' if good else '✗ expected ' + scene.expect_status}", fg="green" if good else "red")
        click.echo("\n• The robot's account (ivr notifications)")
        await cli("notifications", "--database-url", settings.database_url)
        tasks = await asyncio.to_thread(_sql, settings.database_url,
                                        "SELECT body FROM manager_tasks ORDER BY id DESC LIMIT 1")
        if tasks:
            click.echo(f"  Manager task: {tasks[0][0]}")
    finally:
        await asyncio.to_thread(robot.stop)
    return ok
