"""The caller's audio reaches the controller live: snoop + externalMedia -> RTP -> CallAudio.

A sipp phone behind the carrier trunk answers and speaks a Festival sentence after 1 s of
silence; the frames we receive are quiet first, then loud, then quiet again."""

from __future__ import annotations

import array
import asyncio
import math
import shutil
import subprocess
import uuid

import pytest

from ivr.ari import AriClient, AriEventStream, CallDispatcher
from ivr.phones.sipp import SippAnswerer
from ivr.speech.listen import FRAME_BYTES, CallAudio

pytestmark = pytest.mark.e2e


def rms(frame: bytes) -> float:
    samples = array.array("h", frame)
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


@pytest.fixture(scope="module")
def spoken_wav(tmp_path_factory):
    if not shutil.which("text2wave"):
        pytest.fail("festival (text2wave) is not installed: scripts/bootstrap.sh installs it")
    out = tmp_path_factory.mktemp("speech") / "da.wav"
    src = out.with_suffix(".txt")
    src.write_text("Да, удобно. Перезвоните завтра в десять.", encoding="utf-8")
    subprocess.run(["text2wave", "-F", "8000", "-eval", "(voice_msu_ru_nsh_clunits)", str(src), "-o", str(out)],
                   check=True, timeout=60)
    return out


async def test_caller_audio_streams_to_the_controller(asterisk, e2e_settings, tmp_path, spoken_wav):
    app = f"test-listen-{uuid.uuid4().hex[:6]}"
    ari = AriClient(e2e_settings.ari_url, e2e_settings.ari_user, e2e_settings.ari_password)
    heard: list[float] = []
    done = asyncio.Event()

    async def flow(session, first):
        audio = CallAudio(ari, session, app, bind_host=e2e_settings.bind_host)
        await audio.start()
        try:
            loop = asyncio.get_running_loop()
            until = loop.time() + 5.0
            while loop.time() < until:
                frame = await audio.next_frame(timeout=1.0)
                if frame is not None:
                    assert len(frame) == FRAME_BYTES
                    heard.append(rms(frame))
        finally:
            await audio.close()
            await ari.hangup(session.channel_id)
            done.set()

    dispatcher = CallDispatcher(app, flow)
    stream = AriEventStream(ari, app, dispatcher)
    reader = asyncio.create_task(stream.run())
    far = await SippAnswerer(listen_port=e2e_settings.carrier_port, workdir=tmp_path, mode="answer", hold=15,
                             script=[("silence", 1.0), ("speak", spoken_wav), ("silence", 2.0)]).start()
    try:
        await asyncio.wait_for(stream.connected.wait(), 10)
        await ari.originate("PJSIP/79160000001@carrier", app=app, channel_id=f"listen-{uuid.uuid4().hex[:8]}",
                            timeout=10)
        await asyncio.wait_for(done.wait(), 30)
        for _ in range(50):   # hang-ups complete asynchronously in Asterisk
            snoops = [c for c in await ari.channels() if c.id.startswith(("snoop-", "media-"))]
            if not snoops:
                break
            await asyncio.sleep(0.1)
    finally:
        await far.stop()
        await stream.stop()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await ari.close()
    assert len(heard) > 150, f"only {len(heard)} frames of 20 ms in 5 s"
    loud = [i for i, level in enumerate(heard) if level > 300]
    assert loud, f"no speech heard; levels {heard[:20]}..."
    assert heard[0] < 300 and min(loud) > 20          # quiet first (the phone's 1 s of silence)
    assert not snoops, "the helper channels must be gone after close()"
