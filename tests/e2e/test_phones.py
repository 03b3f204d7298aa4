"""Phone-to-phone tests of the SIP test-phone harness (no Asterisk needed).

Run: .cache/venv/bin/python -m pytest tests/e2e/test_phones.py -q -m e2e
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from ivr.phones import BaresipPhone, PhoneError, SippAnswerer, SippCaller

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (sip-tester) not installed"),
]


@pytest.fixture
def speech_wav(tmp_path) -> Path:
    path = tmp_path / "speech.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(path), "synth", "1.5", "sine", "440"],
                   check=True)
    return path


async def test_answer_mode_both_sides_see_the_call(tmp_path):
    async with SippAnswerer(mode="answer", hold=30, workdir=tmp_path) as op:
        caller = SippCaller("127.0.0.1", op.port, workdir=tmp_path, caller_name="Test Caller")
        res = await caller.call("200", hold_after=1.0, timeout=5)
        assert res.status == 200 and res.answered and res.returncode == 0
        assert res.invite_sent_at <= res.answered_at < res.bye_at
        assert not res.hung_up_by_remote
        calls = await op.wait_for_calls(1, ended=True)
        assert op.invites == 1 and op.answered == 1 and op.cancelled == 0
        assert calls[0].remote_bye and "Test Caller" in calls[0].from_
        assert calls[0].request_uri.startswith("sip:200@")


async def test_busy_mode_gives_486(tmp_path):
    async with SippAnswerer(mode="busy", workdir=tmp_path) as op:
        res = await SippCaller("127.0.0.1", op.port, workdir=tmp_path).call("200", timeout=5)
        assert res.status == 486 and not res.answered and res.answered_at is None
        calls = await op.wait_for_calls(1)
        assert calls[0].rejected == 486 and op.answered == 0


async def test_ring_mode_caller_gives_up_with_cancel(tmp_path):
    async with SippAnswerer(mode="ring", workdir=tmp_path) as op:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        res = await SippCaller("127.0.0.1", op.port, workdir=tmp_path).call("200", timeout=2)
        assert 1.8 < loop.time() - t0 < 8
        assert res.cancelled and res.status == 487 and not res.answered
        await op.wait_for_calls(1, ended=True)
        assert op.cancelled == 1 and op.answered == 0


async def test_caller_cancels_during_answer_delay(tmp_path):
    async with SippAnswerer(mode="answer", answer_delay=5, workdir=tmp_path) as op:
        res = await SippCaller("127.0.0.1", op.port, workdir=tmp_path).call("200", timeout=1.5)
        assert res.status == 487 and res.cancelled
        await op.wait_for_calls(1, ended=True)
        assert op.cancelled == 1 and op.answered == 0


async def test_answer_after_delay_and_remote_hangs_up_first(tmp_path):
    async with SippAnswerer(mode="answer", answer_delay=1.0, hold=1.5, workdir=tmp_path) as op:
        res = await SippCaller("127.0.0.1", op.port, workdir=tmp_path).call("200", hold_after=20, timeout=5)
        assert res.status == 200 and res.hung_up_by_remote and res.returncode == 0
        assert res.answered_at - res.invite_sent_at >= 0.9
        assert 1.3 < res.talk_time < 3.0
        assert res.remote_bye.startswith("BYE ")
        calls = await op.wait_for_calls(1, ended=True)
        assert calls[0].local_bye and not calls[0].remote_bye


async def test_hangup_after_cuts_the_call(tmp_path):
    async with SippAnswerer(mode="answer", hold=30, workdir=tmp_path) as op:
        res = await SippCaller("127.0.0.1", op.port, workdir=tmp_path).call(
            "200", dtmf="123", hangup_after=0.8, hold_after=20, timeout=5)
        assert res.answered and not res.hung_up_by_remote
        assert res.talk_time < 2.0


async def test_dtmf_and_speech_call_and_answerer_dtmf(tmp_path, speech_wav):
    """DTMF reception needs Asterisk; here: the calls with media complete cleanly on both sides."""
    async with SippAnswerer(mode="answer", hold=30, dtmf="9#", workdir=tmp_path) as op:
        caller = SippCaller("127.0.0.1", op.port, workdir=tmp_path)
        res = await caller.call("200", dtmf="1*#0", speak_wav=speech_wav, hold_after=0.5, timeout=5)
        assert res.status == 200 and res.returncode == 0
        # 1.5 s pad + 1.5 s speech + 1.5 s delay + digits + 0.5 s hold
        assert res.talk_time > 5.0
        assert (res.scenario.parent / "media.pcap").stat().st_size > 10000


async def test_several_phones_at_once_and_sequential_calls(tmp_path):
    async with SippAnswerer(mode="answer", hold=30, workdir=tmp_path) as op1, \
            SippAnswerer(mode="busy", workdir=tmp_path) as op2:
        assert op1.port != op2.port
        results = await asyncio.gather(*[
            SippCaller("127.0.0.1", op.port, workdir=tmp_path, caller_id=f"7916000000{i}").call(
                "300", hold_after=0.5, timeout=5)
            for i, op in enumerate([op1, op1, op2, op1])
        ])
        assert sorted(r.status for r in results) == [200, 200, 200, 486]
        # one more, sequentially, on the same answerer
        assert (await SippCaller("127.0.0.1", op1.port, workdir=tmp_path).call("301", hold_after=0.2)).answered
        await op1.wait_for_calls(4, ended=True)
        assert op1.answered == 4


async def test_hostile_caller_ids_reach_the_far_end(tmp_path):
    async with SippAnswerer(mode="answer", hold=30, workdir=tmp_path) as op:
        for cid, name in [("anonymous", "Anonymous"), ("79161234567", 'x"; DROP TABLE calls;-- [service] ]]>'),
                          ("+7 (916) <evil>", None)]:
            res = await SippCaller("127.0.0.1", op.port, workdir=tmp_path, caller_id=cid,
                                   caller_name=name).call("200", hold_after=0.2, timeout=5)
            assert res.answered
        calls = await op.wait_for_calls(3, ended=True)
        froms = [c.from_ for c in calls]
        assert "anonymous.invalid" in froms[0]
        assert '\\"; DROP TABLE calls;-- [service] ]]>' in froms[1]
        assert "%3Cevil%3E" in froms[2]


async def test_no_one_listening_raises_phone_error(tmp_path):
    caller = SippCaller("127.0.0.1", 9, workdir=tmp_path)  # discard port: nobody answers
    with pytest.raises(PhoneError):
        await caller.call("200", timeout=1)


async def test_cancelled_call_kills_sipp(tmp_path):
    async with SippAnswerer(mode="ring", workdir=tmp_path) as op:
        task = asyncio.create_task(SippCaller("127.0.0.1", op.port, workdir=tmp_path).call("200", timeout=20))
        await op.wait_for_calls(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        out = subprocess.run(["pgrep", "-f", f"sipp 127.0.0.1:{op.port}"], capture_output=True, text=True)
        assert out.stdout.strip() == ""


@pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip not installed")
async def test_baresip_speaks_and_presses_keys(tmp_path, speech_wav):
    async with SippAnswerer(mode="answer", hold=30, workdir=tmp_path) as op:
        phone = BaresipPhone(tmp_path)
        res = await phone.call(f"sip:200@127.0.0.1:{op.port}", wav=speech_wav, dtmf="12#", dtmf_at=0.5,
                               duration=10)
        assert res.established and res.dtmf_sent == "12#"
        assert res.closed  # the call ends by itself when the WAV is over
        calls = await op.wait_for_calls(1, ended=True)
        assert calls[0].answered and calls[0].remote_bye


@pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip not installed")
async def test_baresip_answers_a_sipp_call(tmp_path):
    phone = BaresipPhone(tmp_path, user="operator")
    task = asyncio.create_task(phone.answer(duration=10, dtmf="5", dtmf_at=0.5, hangup_after=2))
    try:
        await phone.wait_ready()
        res = await SippCaller("127.0.0.1", phone.port, workdir=tmp_path).call("operator", hold_after=10)
        assert res.answered and res.hung_up_by_remote
        br = await asyncio.wait_for(task, 15)
        assert br.established and br.incoming == 1 and br.dtmf_sent == "5"
    finally:
        task.cancel()
        await phone.close()
