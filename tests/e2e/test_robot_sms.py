"""The robot's SMS channel end to end: the real ``ivr-robot`` process (with a real Asterisk, as it
needs its ARI app to be healthy) sends over SMPP to the local SMSC (ivr.sms.testing_smsc.LocalSmsc)
running in this test process's event loop; the CRM webhook receiver is a local aiohttp server.

* A job with channel ``sms`` created through the HTTP API reaches the SMSC as Russian text
  (UCS2, concatenated), the SMSC's DELIVRD receipt makes the job ``delivered`` and the CRM is told.
* The SMSC is down when the robot starts: the attempt fails with cause ``smsc_unavailable ...``,
  the job is rescheduled 5 minutes later on the robot's clock (IVR_CLOCK_START), and the robot
  keeps running (healthy, still trying to connect); once the SMSC is up, it binds.

Each test starts its own robot (dialer worker ``e2esms``, API port ``18191 + PORT_OFFSET``).

The delivered test also guards a fixed bug: ivr-robot used to exit right after a successful SMPP
bind (Robot.run treated the finished ``sms-connect`` task as a reason to shut down).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import uuid
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import create_engine, text

from ivr.runner import RobotProcess, robot_env
from ivr.sms.smpp import DATA_CODING_UCS2
from ivr.notify.sms_channel import sms_text
from ivr.sms.testing_smsc import LocalSmsc
from tests.conftest import PORT_OFFSET, unique_mobile
from tests.e2e.floor import wait_for

pytestmark = pytest.mark.e2e

MSK = timezone(timedelta(hours=3))
CLOCK = datetime(2027, 3, 2, 12, 0, tzinfo=MSK)       # a Tuesday, inside 10:00-19:00
SYSTEM_ID = "e2esms"
PASSWORD = "sms7pass"                                 # SMPP passwords are at most 8 characters
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

    async def start(self) -> "Crm":
        app = web.Application()
        app.router.add_post("/crm/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        await self._runner.cleanup()

    def final_for(self, job_id: int) -> dict | None:
        return next((p for p in self.received if p.get("job_id") == job_id), None)


class Robot:
    """The ivr-robot process, its HTTP API and its database."""

    def __init__(self, settings, log_dir):
        self.settings = settings
        self.log_dir = log_dir
        self.proc: RobotProcess | None = None
        url = settings.database_url
        self.db = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1)
                                if url.startswith("postgresql://") else url)

    async def start(self, clock: datetime = CLOCK) -> None:
        env = robot_env(self.settings) | {"IVR_CLOCK_START": clock.isoformat()}
        self.proc = RobotProcess(self.settings, self.log_dir / f"robot-{uuid.uuid4().hex[:4]}.log",
                                 env_overrides=env).start()
        await asyncio.to_thread(self.proc.wait_healthy, 60)

    async def stop(self) -> None:
        if self.proc is not None:
            await asyncio.to_thread(self.proc.stop)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.proc is not None and self.proc.proc.poll() is None

    async def create_sms(self, phone: str) -> dict:
        body = {"phone": phone, "template": "documents_sent", "channel": "sms",
                "variables": {"address_name": "Пётр Николаевич", **VARS}, "external_id": f"e2esms-{uuid.uuid4().hex}"}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://{self.settings.bind_host}:{self.settings.api_port}/v1/notifications",
                                 json=body, headers={"Authorization": f"Bearer {self.settings.api_token}"}) as r:
                status, job = r.status, await r.json()
        assert status == 201, job
        assert job["channel"] == "sms"
        return job

    def sql(self, query: str, **params):
        with self.db.begin() as conn:
            result = conn.execute(text(query), params)
            return result.mappings().all() if result.returns_rows else None

    def job(self, job_id: int):
        return self.sql("SELECT * FROM notification_jobs WHERE id = :id", id=job_id)[0]

    def attempts(self, job_id: int):
        return self.sql("SELECT * FROM notification_attempts WHERE job_id = :id ORDER BY attempt_no", id=job_id)

    def log_text(self) -> str:
        return self.proc.log_text() if self.proc else ""

    async def wait_status(self, job_id: int, statuses: set[str], timeout: float = 60) -> dict:
        def check():
            job = self.job(job_id)
            return job if job["status"] in statuses else None
        try:
            return await wait_for(check, timeout, f"job {job_id} in {statuses}")
        except AssertionError:
            raise AssertionError(f"job {job_id}: {dict(self.job(job_id))}; attempts {self.attempts(job_id)}; "
                                 f"running={self.running}; log:\n{self.log_text()[-4000:]}") from None


@pytest.fixture(scope="module")
async def crm():
    receiver = await Crm().start()
    yield receiver
    await receiver.stop()


@pytest.fixture
async def sms_robot(asterisk, e2e_settings, database_url, crm, tmp_path_factory):
    """``make(smpp_port)`` -> a started Robot whose SMSC is 127.0.0.1:smpp_port."""
    started: list[Robot] = []

    async def make(smpp_port: int) -> Robot:
        settings = e2e_settings.with_overrides(
            api_port=18191 + PORT_OFFSET, api_token=secrets.token_urlsafe(24), company_name="Эни",
            dialer_worker="e2esms", dialer_client_interval=0.0,
            webhook_url=f"http://127.0.0.1:{crm.port}/crm/hook",
            smpp_host="127.0.0.1", smpp_port=smpp_port, smpp_system_id=SYSTEM_ID, smpp_password=PASSWORD)
        robot = Robot(settings, tmp_path_factory.mktemp("robot-sms"))
        started.append(robot)
        robot.sql("TRUNCATE notification_jobs, webhook_deliveries, manager_tasks RESTART IDENTITY CASCADE")
        await robot.start(clock=CLOCK)
        return robot

    yield make
    for robot in started:
        await robot.stop()
        robot.db.dispose()


async def test_sms_job_delivered_with_receipt_and_crm_told(sms_robot, crm):
    smsc = LocalSmsc(SYSTEM_ID, PASSWORD)
    await smsc.start()
    try:
        robot = await sms_robot(smsc.port)
        await asyncio.wait_for(smsc.bound.wait(), 30)
        await asyncio.sleep(1.0)
        assert robot.running, f"ivr-robot exited after binding to the SMSC:\n{robot.log_text()[-3000:]}"
        phone = unique_mobile()
        job = await robot.create_sms(phone)
        done = await robot.wait_status(job["id"], {"delivered"})
        await wait_for(lambda: smsc.messages, 10, "the whole message at the SMSC")
        hook = await wait_for(lambda: crm.final_for(job["id"]), 30, "the CRM webhook")
    finally:
        await smsc.stop()

    assert done["result"] == "delivered" and done["attempts_made"] == 1
    [message] = smsc.messages
    [attempt] = robot.attempts(job["id"])
    assert message.destination_addr == phone.lstrip("+")
    # the call prompt without its "нажмите 1/2" sentences; the attempt records what was sent
    assert message.text == attempt["prompt_text"] == sms_text(done["prompt_text"]) and "нажмите" not in message.text
    assert "Пётр Николаевич, здравствуйте. Компания «Эни»." in message.text
    assert "заказным письмом бухгалтерские документы за декабрь" in message.text
    assert all(seg.data_coding == DATA_CODING_UCS2 for seg in smsc.submitted)
    assert len(smsc.submitted) == len(message.message_ids) > 1          # long Russian text: concatenated
    assert attempt["channel"] == "sms" and attempt["state"] == "done"
    assert attempt["sms_message_id"] == message.message_ids[0]
    assert attempt["cause"].startswith("receipt DELIVRD") and attempt["delivered_at"] is not None
    assert hook["status"] == "delivered" and hook["external_id"] == job["external_id"]
    assert robot.running


async def test_smsc_down_attempt_failed_and_rescheduled_robot_keeps_running(sms_robot):
    port = _free_port()                        # nothing listens here: the SMSC is down
    robot = await sms_robot(port)
    job = await robot.create_sms(unique_mobile())
    done = await robot.wait_status(job["id"], {"scheduled"}, timeout=60)

    [attempt] = robot.attempts(job["id"])
    assert attempt["channel"] == "sms" and attempt["state"] == "failed"
    assert attempt["cause"].startswith("smsc_unavailable"), attempt["cause"]
    assert attempt["sms_message_id"] is None
    assert done["attempts_made"] == 1 and done["claimed_by"] is None and done["result"] is None
    # the policy's SMSC backoff (5 minutes) on the robot's clock, not the wall clock
    assert abs(attempt["ended_at"] - CLOCK) < timedelta(minutes=2), attempt["ended_at"]
    delay = done["next_attempt_at"] - attempt["ended_at"]
    assert timedelta(minutes=4, seconds=50) <= delay <= timedelta(minutes=5, seconds=10), delay

    # the robot did not crash: still running and healthy, still trying the SMSC, nothing else tried
    await asyncio.sleep(2.0)
    assert robot.running
    health = await robot.proc.fetch_health()
    assert health["ok"] and health["sms"] is True
    log = robot.log_text()
    assert "event=sms_connect_failed" in log and "event=sms_send_failed" in log
    assert "Traceback" not in log and "event=robot_task_failed" not in log
    assert len(robot.attempts(job["id"])) == 1
    assert robot.job(job["id"])["status"] == "scheduled"
