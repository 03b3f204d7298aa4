"""The confirmation robot end to end: real Asterisk, the real ``ivr-robot`` process, real Postgres,
a sipp phone behind the carrier trunk as the client, a local HTTP server as the CRM webhook.

The robot's clock starts inside the call window (Tuesday 12:00 Moscow, IVR_CLOCK_START) so the
tests do not depend on the hour CI runs at; "retried at the scheduled time" restarts the robot
with its clock at that time.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import uuid
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import create_engine, text

from ivr.phones.sipp import SippAnswerer
from ivr.runner import RobotProcess, robot_env
from tests.conftest import PORT_OFFSET, unique_mobile
from tests.e2e.floor import wait_for

pytestmark = pytest.mark.e2e

MSK = timezone(timedelta(hours=3))
CLOCK = datetime(2027, 3, 2, 12, 0, tzinfo=MSK)       # a Tuesday, inside 10:00-19:00
VARS = {"sent_date": "07.02", "sent_how": "заказным письмом", "documents": "бухгалтерские документы за декабрь"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Crm:
    """The CRM's webhook receiver."""

    def __init__(self):
        self.port = _free_port()
        self.received: list[dict] = []
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        return web.json_response({"ok": True})

    async def start(self):
        app = web.Application()
        app.router.add_post("/crm/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self):
        await self._runner.cleanup()

    def final_for(self, job_id: int) -> dict | None:
        return next((p for p in self.received if p.get("job_id") == job_id), None)


class Robot:
    """The ivr-robot process plus helpers to talk to its API and read the database."""

    def __init__(self, settings, log_dir):
        self.settings = settings
        self.log_dir = log_dir
        self.proc: RobotProcess | None = None
        self.db = create_engine(settings.database_url.replace("postgresql://", "postgresql+psycopg://", 1)
                                if settings.database_url.startswith("postgresql://") else settings.database_url)

    async def start(self, clock: datetime = CLOCK, **extra_env: str) -> None:
        env = robot_env(self.settings) | {"IVR_CLOCK_START": clock.isoformat()} | extra_env
        self.proc = RobotProcess(self.settings, self.log_dir / f"robot-{uuid.uuid4().hex[:4]}.log",
                                 env_overrides=env).start()
        await asyncio.to_thread(self.proc.wait_healthy, 60)

    async def stop(self) -> None:
        if self.proc is not None:
            await asyncio.to_thread(self.proc.stop)
            self.proc = None

    async def kill(self) -> None:
        await asyncio.to_thread(self.proc.kill)
        self.proc = None

    async def create(self, phone: str, *, template: str = "documents_sent", variables: dict | None = None,
                     external_id: str | None = None, **extra) -> tuple[int, dict]:
        body = {"phone": phone, "template": template,
                "variables": {"address_name": "Пётр Николаевич", **(variables or VARS)},
                "external_id": external_id or f"e2e-{uuid.uuid4().hex}", "channel": "call", **extra}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://{self.settings.bind_host}:{self.settings.api_port}/v1/notifications",
                                 json=body, headers={"Authorization": f"Bearer {self.settings.api_token}"}) as r:
                return r.status, await r.json()

    def sql(self, query: str, **params):
        with self.db.begin() as conn:
            result = conn.execute(text(query), params)
            return result.mappings().all() if result.returns_rows else None

    def job(self, job_id: int):
        return self.sql("SELECT * FROM notification_jobs WHERE id = :id", id=job_id)[0]

    def attempts(self, job_id: int):
        return self.sql("SELECT * FROM notification_attempts WHERE job_id = :id ORDER BY attempt_no", id=job_id)

    async def wait_status(self, job_id: int, statuses: set[str], timeout: float = 60) -> dict:
        def check():
            job = self.job(job_id)
            return job if job["status"] in statuses else None
        try:
            return await wait_for(check, timeout, f"job {job_id} in {statuses}")
        except AssertionError:
            raise AssertionError(f"job {job_id}: {dict(self.job(job_id))}; attempts {self.attempts(job_id)}; "
                                 f"log:\n{self.proc.log_text()[-4000:] if self.proc else ''}") from None


@pytest.fixture(scope="module")
async def crm():
    receiver = await Crm().start()
    yield receiver
    await receiver.stop()


@pytest.fixture(scope="module")
async def robot(asterisk, e2e_settings, database_url, crm, tmp_path_factory):
    settings = e2e_settings.with_overrides(
        api_port=18091 + PORT_OFFSET, api_token=secrets.token_urlsafe(24), company_name="Эни",
        dialer_worker="e2e", dialer_ring_timeout=6, robot_digit_timeout=2.0, dialer_cps=20.0,
        dialer_client_interval=0.0, webhook_url=f"http://127.0.0.1:{crm.port}/crm/hook")
    r = Robot(settings, tmp_path_factory.mktemp("robot"))
    r.sql("TRUNCATE notification_jobs, webhook_deliveries, manager_tasks RESTART IDENTITY CASCADE")
    await r.start()
    yield r
    await r.stop()
    r.db.dispose()


async def far_end(settings, tmp_path, **kwargs) -> SippAnswerer:
    return await SippAnswerer(listen_port=settings.carrier_port, workdir=tmp_path, **kwargs).start()


async def test_client_presses_1_confirmed_and_crm_told(robot, crm, e2e_settings, tmp_path):
    far = await far_end(e2e_settings, tmp_path, mode="answer", dtmf="1", dtmf_delay=2.0, hold=15)
    try:
        status, job = await robot.create(unique_mobile())
        assert status == 201, job
        done = await robot.wait_status(job["id"], {"confirmed"})
    finally:
        await far.stop()
    assert done["result"] == "confirmed" and done["attempts_made"] == 1
    [attempt] = robot.attempts(job["id"])
    assert attempt["state"] == "done" and attempt["digits"] == "1" and attempt["cause"] == "confirmed"
    assert attempt["answered_at"] is not None and attempt["channel_id"] == f"robot-{attempt['id']}"
    assert "Пётр Николаевич, здравствуйте. Компания «Эни». 07.02 мы отправили" in attempt["prompt_text"]
    contact = robot.sql("SELECT direction, result, note FROM contacts WHERE client_id = :c", c=done["client_id"])
    assert [(c["direction"], c["result"]) for c in contact] == [("outbound", "robot:confirmed")]
    hook = await wait_for(lambda: crm.final_for(job["id"]), 30, "the CRM webhook")
    assert hook["status"] == "confirmed" and hook["external_id"] == job["external_id"]
    assert hook["attempts"][0]["digits"] == "1"


async def test_client_presses_2_not_received_and_manager_gets_a_task(robot, e2e_settings, tmp_path):
    far = await far_end(e2e_settings, tmp_path, mode="answer", dtmf="2", dtmf_delay=2.0, hold=15)
    try:
        _, job = await robot.create(unique_mobile())
        done = await robot.wait_status(job["id"], {"not_received"})
    finally:
        await far.stop()
    assert done["result"] == "not_received"
    [task] = robot.sql("SELECT kind, body FROM manager_tasks WHERE job_id = :j", j=job["id"])
    assert task["kind"] == "not_received" and "не получил" in task["body"]


async def test_garbage_keys_then_silence_repeat_once_then_no_action(robot, e2e_settings, tmp_path):
    far = await far_end(e2e_settings, tmp_path, mode="answer", dtmf="5", dtmf_delay=1.5, hold=40)
    try:
        _, job = await robot.create(unique_mobile())
        done = await robot.wait_status(job["id"], {"scheduled"}, timeout=90)
    finally:
        await far.stop()
    [attempt] = robot.attempts(job["id"])
    assert attempt["cause"] == "no_action" and attempt["digits"] == "5" and attempt["state"] == "done"
    assert done["result"] == "no_action"
    # next working day (Wednesday) 10:00 Moscow
    assert done["next_attempt_at"].astimezone(MSK) == datetime(2027, 3, 3, 10, 0, tzinfo=MSK)


async def test_busy_recorded_and_retried_in_15_minutes(robot, e2e_settings, tmp_path):
    far = await far_end(e2e_settings, tmp_path, mode="busy")
    try:
        _, job = await robot.create(unique_mobile())
        done = await robot.wait_status(job["id"], {"scheduled"})
    finally:
        await far.stop()
    [attempt] = robot.attempts(job["id"])
    assert attempt["state"] == "failed" and attempt["cause"] == "busy (17)" and attempt["hangup_cause"] == 17
    delay = done["next_attempt_at"] - attempt["ended_at"]
    assert timedelta(minutes=14) < delay <= timedelta(minutes=16), delay


async def test_hangup_during_prompt_recorded(robot, e2e_settings, tmp_path):
    far = await far_end(e2e_settings, tmp_path, mode="answer", hold=1.5)
    try:
        _, job = await robot.create(unique_mobile())
        done = await robot.wait_status(job["id"], {"scheduled"})
    finally:
        await far.stop()
    [attempt] = robot.attempts(job["id"])
    assert attempt["cause"] == "hangup_during_prompt" and attempt["answered_at"] is not None
    assert done["next_attempt_at"] - attempt["ended_at"] > timedelta(minutes=59)


async def test_no_answer_then_retried_at_the_scheduled_time(robot, e2e_settings, tmp_path):
    far = await far_end(e2e_settings, tmp_path, mode="ring")
    try:
        _, job = await robot.create(unique_mobile())
        done = await robot.wait_status(job["id"], {"scheduled"}, timeout=60)
        invites = len(await far.wait_for_calls(1, timeout=5))
    finally:
        await far.stop()
    [attempt] = robot.attempts(job["id"])
    assert attempt["cause"].startswith("no_answer") and invites == 1
    retry_at = done["next_attempt_at"]
    assert timedelta(hours=1, minutes=59) < retry_at - attempt["ended_at"] <= timedelta(hours=2, minutes=1)

    # The robot's clock at the scheduled time: the second attempt is placed, he presses 1.
    await robot.stop()
    far = await far_end(e2e_settings, tmp_path, mode="answer", dtmf="1", dtmf_delay=1.5, hold=15)
    try:
        await robot.start(clock=retry_at + timedelta(seconds=5))
        done = await robot.wait_status(job["id"], {"confirmed"})
    finally:
        await far.stop()
        await robot.stop()
        await robot.start()
    assert done["attempts_made"] == 2
    assert [a["cause"] for a in robot.attempts(job["id"])][1] == "confirmed"


async def test_call_window_closed_scheduled_into_the_next_window(robot, e2e_settings, tmp_path):
    far = await far_end(e2e_settings, tmp_path, mode="answer", dtmf="1", hold=10)
    try:
        number = unique_mobile()
        status, job = await robot.create(number)
        # 12:00 in Moscow is 19:00 in Vladivostok: his window (10:00-19:00 local) is closed.
        robot.sql("UPDATE clients SET timezone = 'Asia/Vladivostok' WHERE id = :c", c=job["client_id"])
        robot.sql("UPDATE notification_jobs SET next_attempt_at = now() WHERE id = :j", j=job["id"])
        await wait_for(lambda: robot.job(job["id"])["next_attempt_at"] > datetime.now(timezone.utc) + timedelta(hours=1),
                       30, "the job deferred")
        await asyncio.sleep(1.0)
        calls = far.invites
    finally:
        await far.stop()
    deferred = robot.job(job["id"])
    assert deferred["status"] == "scheduled" and deferred["attempts_made"] == 0
    assert robot.attempts(job["id"]) == []
    local = deferred["next_attempt_at"].astimezone(timezone(timedelta(hours=10)))
    assert (local.date(), local.hour, local.minute) == (datetime(2027, 3, 3).date(), 10, 0)
    assert not calls


async def test_idempotent_creation_and_field_errors(robot):
    number = unique_mobile()
    ext = f"crm-{uuid.uuid4().hex}"
    later = (CLOCK + timedelta(days=30)).isoformat()
    s1, first = await robot.create(number, external_id=ext, earliest_at=later)
    s2, second = await robot.create(number, external_id=ext, earliest_at=later)
    assert (s1, s2) == (201, 200) and first["id"] == second["id"]
    assert robot.sql("SELECT count(*) AS n FROM notification_jobs WHERE external_id = :e", e=ext)[0]["n"] == 1
    s3, err = await robot.create("8 (916) 12", external_id=None)
    assert s3 == 422 and err["errors"][0]["field"] == "phone"
    s4, err = await robot.create(number, variables={"sent_date": "07.02"})
    assert s4 == 422 and err["errors"][0]["field"].startswith("variables.")


async def test_sigkill_mid_call_reconciled_without_a_second_call(robot, e2e_settings, tmp_path):
    # He answers, listens, and presses 1 only after the robot was killed and restarted.
    # (pressed three times, 10 s apart: however long the restart takes, one press reaches the new run)
    far = await far_end(e2e_settings, tmp_path, mode="answer", hold=45, script=[
        ("silence", 9.0), ("dtmf", "1"), ("silence", 10.0), ("dtmf", "1"), ("silence", 10.0), ("dtmf", "1")])
    try:
        _, job = await robot.create(unique_mobile())

        def answered():
            rows = robot.attempts(job["id"])
            return rows and robot.sql("SELECT 1 FROM notification_attempts WHERE id = :a", a=rows[0]["id"]) and \
                "event=prompt_started" in robot.proc.log_text()
        await wait_for(answered, 30, "the prompt playing")
        await robot.kill()
        [attempt] = robot.attempts(job["id"])
        assert attempt["state"] == "dialing"   # nothing recorded: killed mid-call
        await robot.start()
        done = await robot.wait_status(job["id"], {"confirmed"}, timeout=60)
        await asyncio.sleep(2)
        invites = far.invites
    finally:
        await far.stop()
    assert invites == 1, "the client must not be called twice for the same attempt"
    assert done["attempts_made"] == 1
    [attempt] = robot.attempts(job["id"])
    assert attempt["digits"] == "1" and "adopted" in attempt["cause"] or attempt["cause"] == "confirmed"
    assert "event=call_adopted" in robot.proc.log_text()


async def test_prompt_fetched_over_http_as_for_an_asterisk_on_another_host(robot, e2e_settings, tmp_path):
    """IVR_TTS_HTTP_BASE: Asterisk plays sound:http://<robot>/tts/<hash>.sln via res_http_media_cache
    instead of reading the robot's folder (docs/tts.md, "Asterisk on another host")."""
    base = f"http://{robot.settings.bind_host}:{robot.settings.api_port}/tts"
    await robot.stop()
    await robot.start(IVR_TTS_HTTP_BASE=base)
    far = await far_end(e2e_settings, tmp_path, mode="answer", dtmf="1", dtmf_delay=3.0, hold=15)
    try:
        unique = {**VARS, "documents": f"акт сверки номер {secrets.randbelow(10**6)}"}
        _, job = await robot.create(unique_mobile(), variables=unique)
        done = await robot.wait_status(job["id"], {"confirmed"})
        health = await robot.proc.fetch_health()
        log = robot.proc.log_text()
    finally:
        await far.stop()
        await robot.stop()
        await robot.start()
    assert done["result"] == "confirmed"
    assert f"sound=sound:{base}/" in log and "event=prompt_failed" not in log
    assert health["tts"]["http_requests"] >= 1   # Asterisk downloaded the prompt from us


async def test_channel_and_rate_limits_hold(robot, e2e_settings, tmp_path):
    """max 2 channels at once, 2 calls per second: seen from the far end's INVITEs and BYEs."""
    await robot.stop()
    await robot.start(IVR_DIALER_MAX_CHANNELS="2", IVR_DIALER_CPS="2")
    far = await far_end(e2e_settings, tmp_path, mode="answer", dtmf="1", dtmf_delay=1.0, hold=20)
    try:
        jobs = [(await robot.create(unique_mobile()))[1] for _ in range(5)]
        for job in jobs:
            await robot.wait_status(job["id"], {"confirmed"}, timeout=90)
        calls = await far.wait_for_calls(5, timeout=10, ended=True)
    finally:
        await far.stop()
        await robot.stop()
        await robot.start()
    assert len(calls) == 5
    spans = sorted((c.invited_at, c.ended_at) for c in calls)
    most_at_once = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert most_at_once <= 2, spans
    gaps = [b[0] - a[0] for a, b in zip(spans, spans[1:])]
    assert min(gaps) >= 0.45, gaps   # 2 calls/s: at least ~0.5 s between two originates


async def test_trunk_down_fails_the_attempt_with_a_cause_and_retries(robot):
    """Nothing answers at the carrier's address (UDP, no qualify): Asterisk gives up at the ring
    timeout with cause 19; the attempt fails with it, the job is retried by the policy (+2 h), the
    robot keeps working. (With IVR_CARRIER_QUALIFY a dead trunk is known at once and the
    originate is refused: the next test's path.)"""
    _, job = await robot.create(unique_mobile())
    done = await robot.wait_status(job["id"], {"scheduled"}, timeout=60)
    [attempt] = robot.attempts(job["id"])
    assert attempt["state"] == "failed" and attempt["answered_at"] is None
    assert attempt["cause"] == "no_answer (19)" and attempt["hangup_cause"] == 19
    assert abs(done["next_attempt_at"] - attempt["ended_at"] - timedelta(hours=2)) < timedelta(seconds=5)
    assert (await robot.proc.fetch_health())["ok"]


async def test_unusable_trunk_refused_by_asterisk_fails_with_a_cause_and_retries(robot):
    """An originate Asterisk refuses (here: a trunk endpoint that does not exist; in production
    also a qualified trunk with no reachable contact) -> cause recorded, retried +30 min."""
    await robot.stop()
    await robot.start(IVR_OUTBOUND_TRUNK="no-such-trunk")
    try:
        _, job = await robot.create(unique_mobile())
        done = await robot.wait_status(job["id"], {"scheduled"}, timeout=30)
    finally:
        await robot.stop()
        await robot.start()
    [attempt] = robot.attempts(job["id"])
    assert attempt["state"] == "failed" and attempt["cause"].startswith("originate_refused")
    assert abs(done["next_attempt_at"] - attempt["ended_at"] - timedelta(minutes=30)) < timedelta(seconds=5)
