"""The spoken "when is it convenient?" dialog end to end: the real ivr-robot with faster-whisper
and silero-vad, real Asterisk, a sipp phone behind the trunk that *speaks* Festival-synthesised
Russian answers (8 kHz; clean and with white noise at 20 dB SNR) and presses keys.

The robot's clock: Tuesday 16 March 2027 12:00 Moscow; it proposes Wednesday 17 March 10:00.
"""

from __future__ import annotations

import secrets
import subprocess
import uuid
import wave
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from ivr.phones.sipp import SippAnswerer
from tests.conftest import PORT_OFFSET, unique_mobile
from tests.e2e.floor import wait_for
from tests.e2e.test_robot import Crm, Robot

pytestmark = pytest.mark.e2e

MSK = timezone(timedelta(hours=3))
CLOCK = datetime(2027, 3, 16, 12, 0, tzinfo=MSK)
PROPOSED = datetime(2027, 3, 17, 10, 0, tzinfo=MSK)
MONDAY = datetime(2027, 3, 22, tzinfo=MSK).date()
TOPIC = {"topic": "ваш новый заказ"}


def festival(text: str, out, *, snr_db: float | None = None):
    src = out.with_suffix(".txt")
    src.write_text(text, encoding="utf-8")
    subprocess.run(["text2wave", "-F", "8000", "-eval", "(voice_msu_ru_nsh_clunits)", str(src), "-o", str(out)],
                   check=True, timeout=60, capture_output=True)
    if snr_db is not None:
        with wave.open(str(out)) as w:
            rate, samples = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        signal = samples.astype(np.float64)
        noise = np.random.default_rng(7).normal(0, 1, signal.size)
        noise *= np.sqrt(np.mean(signal ** 2) / 10 ** (snr_db / 10)) / np.sqrt(np.mean(noise ** 2))
        noisy = np.clip(signal + noise, -32768, 32767).astype("<i2")
        with wave.open(str(out), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
            w.writeframes(noisy.tobytes())
    return out


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    d = tmp_path_factory.mktemp("answers")
    return {
        "da": festival("Да.", d / "da.wav"),
        "da_noisy": festival("Да.", d / "da-noisy.wav", snr_db=20),
        "net": festival("Нет.", d / "net.wav"),
        "monday": festival("В понедельник утром.", d / "monday.wav"),
        "monday_noisy": festival("В понедельник утром.", d / "monday-noisy.wav", snr_db=20),
    }


@pytest.fixture(scope="module")
async def crm_speech():
    receiver = await Crm().start()
    yield receiver
    await receiver.stop()


@pytest.fixture(scope="module")
async def robot(asterisk, e2e_settings, database_url, crm_speech, tmp_path_factory):
    settings = e2e_settings.with_overrides(
        api_port=18092 + PORT_OFFSET, api_token=secrets.token_urlsafe(24), company_name="Эни",
        dialer_worker="e2espeech", dialer_ring_timeout=6, dialer_cps=20.0, dialer_client_interval=0.0,
        robot_no_speech_timeout=3.0, webhook_url=f"http://127.0.0.1:{crm_speech.port}/crm/hook")
    r = Robot(settings, tmp_path_factory.mktemp("robot-speech"))
    # jobs other modules left scheduled would be due at this later clock and take the far end
    r.sql("TRUNCATE notification_jobs, webhook_deliveries, manager_tasks RESTART IDENTITY CASCADE")
    await r.start(clock=CLOCK)
    health = await r.proc.fetch_health()
    assert health["speech"], f"the robot has no speech engine: {r.proc.log_text()[-2000:]}"
    yield r
    await r.stop()
    r.db.dispose()


async def dialog_call(robot, settings, tmp_path, script, statuses=("callback", "handed_over")):
    far = await SippAnswerer(listen_port=settings.carrier_port, workdir=tmp_path / uuid.uuid4().hex[:6],
                             mode="answer", hold=60, script=script).start()
    try:
        status, job = await robot.create(unique_mobile(), template="callback_offer", variables=TOPIC)
        assert status == 201, job
        done = await robot.wait_status(job["id"], set(statuses), timeout=120)
    finally:
        await far.stop()
    utterances = robot.sql("SELECT u.* FROM utterances u JOIN notification_attempts a ON a.id = u.attempt_id "
                           "WHERE a.job_id = :j ORDER BY seq", j=job["id"])
    return done, utterances


@pytest.mark.parametrize("answer", ["da", "da_noisy"])
async def test_yes_records_the_callback_at_the_proposed_time(robot, e2e_settings, tmp_path, answers, answer):
    # he says «да» over the question (barge-in)
    done, utterances = await dialog_call(robot, e2e_settings, tmp_path,
                                         [("silence", 4.0), ("speak", answers[answer]), ("silence", 30)])
    assert done["status"] == "callback", (done, utterances)
    assert done["callback_at"].astimezone(MSK) == PROPOSED
    assert [u["intent"] for u in utterances] == ["affirm"], utterances
    assert utterances[0]["audio_path"] and utterances[0]["transcript"]
    [task] = robot.sql("SELECT kind, due_at FROM manager_tasks WHERE job_id = :j", j=done["id"])
    assert task["kind"] == "callback" and task["due_at"].astimezone(MSK) == PROPOSED


@pytest.mark.parametrize("answer", ["monday", "monday_noisy"])
async def test_no_then_monday_morning_is_scheduled_in_the_window(robot, e2e_settings, tmp_path, answers, answer):
    done, utterances = await dialog_call(robot, e2e_settings, tmp_path, [
        ("silence", 4.0), ("speak", answers["net"]), ("silence", 5.0), ("speak", answers[answer]), ("silence", 30)])
    assert done["status"] == "callback", (done, utterances)
    local = done["callback_at"].astimezone(MSK)
    assert local.date() == MONDAY and 9 <= local.hour < 12, local
    assert [u["intent"] for u in utterances][-1] == "reschedule" and "deny" in [u["intent"] for u in utterances]


async def test_silence_leads_to_the_key_menu_and_keys_work_there(robot, e2e_settings, tmp_path):
    # nothing said: question, «извините», question again, then the key menu: he presses 1
    log_before = len(robot.proc.log_text())
    done, utterances = await dialog_call(robot, e2e_settings, tmp_path, [("silence", 45.0), ("dtmf", "1"),
                                                                          ("silence", 20)])
    assert done["status"] == "callback" and done["callback_at"].astimezone(MSK) == PROPOSED
    assert utterances == []
    [attempt] = robot.attempts(done["id"])
    assert attempt["digits"] == "1" and "menu" in attempt["cause"]


async def test_keys_still_work_mid_dialog(robot, e2e_settings, tmp_path, answers):
    # «нет» by voice, then at «Когда вам удобнее?» he presses 1: the proposed time
    done, utterances = await dialog_call(robot, e2e_settings, tmp_path, [
        ("silence", 4.0), ("speak", answers["net"]), ("silence", 5.0), ("dtmf", "1"), ("silence", 30)])
    assert done["status"] == "callback" and done["callback_at"].astimezone(MSK) == PROPOSED
    assert [u["intent"] for u in utterances] == ["deny"]
    assert robot.attempts(done["id"])[0]["digits"] == "1"
