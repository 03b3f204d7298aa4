"""What the spoken dialog leaves in Postgres: the callback / handed-over results with their
manager tasks (finish_attempt), and the utterance retention sweep (Dialer.forget_old_utterances)."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from ivr.ari import AriClient, CallDispatcher
from ivr.notify.claim import claim_due_jobs
from ivr.notify.dialer import Dialer
from ivr.notify.outcomes import AttemptResult, finish_attempt
from ivr.notify.retry import parse_policies
from ivr.notify.speech_dialog import SpeechKit, proposed_slot, say_when
from ivr.notify.templates import TemplateStore
from ivr.notify.window import CallWindow
from models.db import make_async_engine
from models.migrate import upgrade
from models.notifications import JobRequest, create_job
from tests.conftest import TEST_DB, drop_database, recreate_database

pytestmark = pytest.mark.db

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=MSK)          # Tuesday
POLICIES = parse_policies("defaults: {}\ntemplates:\n  offer:\n    dialog: callback\n")


@pytest.fixture(scope="module")
def db_url(pg_server_url):
    name = f"{TEST_DB}_speech"
    url = recreate_database(pg_server_url, name)
    upgrade(url)
    yield url
    drop_database(pg_server_url, name)


@pytest.fixture
async def engine(db_url):
    engine = make_async_engine(db_url)
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM notification_jobs"))
    yield engine
    await engine.dispose()


@pytest.fixture
def templates(tmp_path):
    (tmp_path / "offer.txt.j2").write_text("{{ address_name }}, здравствуйте. Хотим обсудить {{ topic }}.",
                                           encoding="utf-8")
    return TemplateStore(tmp_path, company_name="Эни")


async def claimed_attempt(engine, templates):
    async with engine.begin() as conn:
        await create_job(conn, JobRequest(template="offer", variables={"address_name": "Пётр Николаевич",
                                                                        "topic": "заказ"},
                                          phone="+79161234567", channel="call"),
                         templates=templates, now=NOW - timedelta(hours=1), policies=POLICIES)
        [claimed] = await claim_due_jobs(conn, worker="t", now=NOW, limit=5)
    return claimed


async def test_callback_agreed_is_final_with_its_time_and_a_due_task(engine, templates):
    claimed = await claimed_attempt(engine, templates)
    when = datetime(2026, 12, 7, 10, 0, tzinfo=MSK)
    async with engine.begin() as conn:
        done = await finish_attempt(conn, claimed.attempt_id, AttemptResult(
            "callback", "asked for 07.12 10:00", NOW + timedelta(minutes=1), answered_at=NOW,
            callback_at=when, prompt_text="…Удобно будет…?"), policies=POLICIES, now=NOW + timedelta(minutes=1))
        job = (await conn.execute(text("SELECT status, result, callback_at FROM notification_jobs WHERE id = :j"),
                                  {"j": claimed.job_id})).one()
        task = (await conn.execute(text("SELECT kind, due_at, body FROM manager_tasks WHERE job_id = :j"),
                                   {"j": claimed.job_id})).one()
        hook = (await conn.execute(text("SELECT payload FROM webhook_deliveries WHERE job_id = :j"),
                                   {"j": claimed.job_id})).scalar()
    assert done.status == "callback" and job.status == job.result == "callback" and job.callback_at == when
    assert task.kind == "callback" and task.due_at == when and "07.12 10:00" in task.body
    assert hook["status"] == "callback"


async def test_handed_over_raises_the_task_it_names(engine, templates):
    claimed = await claimed_attempt(engine, templates)
    async with engine.begin() as conn:
        await finish_attempt(conn, claimed.attempt_id, AttemptResult(
            "handed_over", "answer stayed unclear", NOW, task=("unclear_answer", "робот не понял ответ")),
            policies=POLICIES, now=NOW)
        rows = (await conn.execute(text("SELECT kind, body FROM manager_tasks WHERE job_id = :j"),
                                   {"j": claimed.job_id})).all()
        status = (await conn.execute(text("SELECT status FROM notification_jobs WHERE id = :j"),
                                     {"j": claimed.job_id})).scalar()
    assert status == "handed_over"
    assert [(r.kind, "робот не понял ответ" in r.body) for r in rows] == [("unclear_answer", True)]


async def test_old_utterances_and_their_audio_are_forgotten(engine, templates, tmp_path):
    claimed = await claimed_attempt(engine, templates)
    old_audio, new_audio = tmp_path / "old.wav", tmp_path / "new.wav"
    old_audio.write_bytes(b"RIFF"), new_audio.write_bytes(b"RIFF")
    async with engine.begin() as conn:
        for seq, at, path in ((1, NOW - timedelta(days=40), old_audio), (2, NOW - timedelta(days=2), new_audio)):
            await conn.execute(text(
                "INSERT INTO utterances (attempt_id, seq, step, at, duration_s, audio_path, transcript, intent) "
                "VALUES (:a, :s, 'ask', :at, 0.8, :p, 'да', 'affirm')"), {"a": claimed.attempt_id, "s": seq,
                                                                         "at": at, "p": str(path)})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ari = AriClient(f"http://127.0.0.1:{port}", "u", "p" * 16)
    dialer = Dialer(engine=engine, ari=ari, dispatcher=CallDispatcher("t", None), app="t", synthesizer=None,
                    policies=POLICIES, worker="t", trunk="carrier", caller_id="x", language="ru",
                    clock=lambda: NOW, speech=SpeechKit.keys_only())
    try:
        assert await dialer.forget_old_utterances(30) == 1
    finally:
        await ari.close()
    async with engine.connect() as conn:
        left = (await conn.execute(text("SELECT seq FROM utterances WHERE attempt_id = :a"),
                                   {"a": claimed.attempt_id})).scalars().all()
    assert left == [2] and not old_audio.exists() and new_audio.exists()


def test_the_proposed_time_and_how_it_is_said():
    window = CallWindow()
    friday = datetime(2026, 12, 4, 15, 0, tzinfo=MSK)
    slot = proposed_slot(friday, MSK, window)
    assert slot == datetime(2026, 12, 7, 10, 0, tzinfo=MSK)              # Monday 10:00
    assert say_when(slot, friday) == "в понедельник, 07.12, в 10:00"
    assert say_when(proposed_slot(NOW, MSK, window), NOW) == "завтра, 02.12, в 10:00"
    assert say_when(datetime(2026, 12, 1, 15, 30, tzinfo=MSK), NOW) == "сегодня, 01.12, в 15:30"
