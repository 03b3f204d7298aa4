"""TTS engines with the real programs (Festival + festvox-ru, espeak-ng; scripts/bootstrap.sh
installs them) and the Synthesizer: fallback, cache hits without spawning, one synthesis for
concurrent requests of the same text, bounded workers, text limit."""

import array
import asyncio
import math
import shutil
import subprocess

import pytest

from ivr.speech.cache import PromptCache
from ivr.speech.tts import (EspeakEngine, FestivalEngine, PromptAudio, Synthesizer, TextTooLong,
                            TtsError, TtsUnavailable, resample_linear, wav_to_pcm)

SENTENCE = "Здравствуйте! Это торговый дом. Вам сейчас удобно говорить?"


def _festival_ru_installed() -> bool:
    if not shutil.which("text2wave"):
        return False
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "festvox-ru"], capture_output=True, text=True)
    return "install ok installed" in r.stdout


needs_festival = pytest.mark.skipif(not _festival_ru_installed(),
                                    reason="Festival with festvox-ru not installed (apt-get install festival festvox-ru)")
needs_espeak = pytest.mark.skipif(not shutil.which("espeak-ng"),
                                  reason="espeak-ng not installed (apt-get install espeak-ng)")


def rms(pcm: bytes) -> float:
    a = array.array("h")
    a.frombytes(pcm)
    return math.sqrt(sum(x * x for x in a) / len(a))


def assert_speech(pcm: bytes, rate: int = 8000):
    assert len(pcm) % 2 == 0
    duration = len(pcm) / (2 * rate)
    assert 1.0 < duration < 10.0, duration
    assert rms(pcm) > 300, rms(pcm)  # not silence (16-bit full scale is 32767)


@needs_festival
async def test_festival_russian_8k():
    e = FestivalEngine()
    pcm = await e.synthesize(SENTENCE, 8000)
    assert_speech(pcm)
    assert e.spawns == 1  # asked text2wave for 8 kHz: no resampling process


@needs_festival
async def test_festival_16k():
    pcm = await FestivalEngine().synthesize(SENTENCE, 16000)
    assert_speech(pcm, 16000)


@needs_espeak
@pytest.mark.parametrize("sox", ["sox", None])
async def test_espeak_russian_8k(sox):
    if sox and not shutil.which(sox):
        pytest.skip("sox not installed")
    e = EspeakEngine(sox=sox)
    pcm = await e.synthesize(SENTENCE, 8000)
    assert_speech(pcm)
    assert e.spawns == (2 if sox else 1)  # espeak-ng (+ sox resampling 22050 -> 8000)


async def test_missing_binaries_name_the_package():
    with pytest.raises(TtsUnavailable, match="festival festvox-ru"):
        await FestivalEngine(binary="/nonexistent/text2wave").synthesize("да", 8000)
    with pytest.raises(TtsUnavailable, match="espeak-ng"):
        await EspeakEngine(binary="/nonexistent/espeak-ng").synthesize("да", 8000)


@needs_festival
async def test_festival_missing_voice_is_unavailable():
    with pytest.raises(TtsUnavailable, match="festvox-ru"):
        await FestivalEngine(voice="no_such_voice").synthesize("да", 8000)


@needs_espeak
async def test_fallback_to_espeak(tmp_path, caplog):
    broken = FestivalEngine(binary="/nonexistent/text2wave")
    espeak = EspeakEngine()
    s = Synthesizer([broken, espeak], PromptCache(tmp_path, 10_000_000))
    a = await s.prompt(SENTENCE)
    assert a.engine == "espeak-ng" and not a.cached
    assert_speech(a.path.read_bytes())
    assert "falling back" in caplog.text
    # The broken engine is not retried for a while; the fallback's rendering is now a cache hit.
    b = await s.prompt(SENTENCE)
    assert b.cached and b.engine == "espeak-ng" and espeak.spawns == 2


@needs_festival
async def test_cache_hit_spawns_nothing(tmp_path):
    f = FestivalEngine()
    s = Synthesizer([f, EspeakEngine()], PromptCache(tmp_path, 10_000_000))
    a = await s.prompt(SENTENCE)
    assert isinstance(a, PromptAudio) and not a.cached and a.engine == "festival"
    assert 1.0 < a.duration_s < 10.0
    assert a.path.suffix == ".sln" and a.sound == "sound:" + str(a.path.with_suffix(""))
    spawns = f.spawns
    b = await s.prompt("  Здравствуйте!   Это торговый дом.\nВам сейчас удобно говорить? ")  # same text normalised
    assert b.cached and b.path == a.path and f.spawns == spawns
    # Another Synthesizer (another process) on the same folder: still a hit.
    f2 = FestivalEngine()
    c = await Synthesizer([f2], PromptCache(tmp_path, 10_000_000)).prompt(SENTENCE)
    assert c.cached and f2.spawns == 0


class CountingEngine:
    """Fake engine: counts calls and concurrency (no process)."""

    def __init__(self, name="fake", delay=0.05, fail=False):
        self.name, self.voice, self.delay, self.fail = name, "v", delay, fail
        self.calls = self.running = self.peak = 0

    async def synthesize(self, text, sample_rate):
        self.calls += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.delay)
            if self.fail:
                raise TtsError("boom")
            return b"\x10\x20" * sample_rate  # 1 s
        finally:
            self.running -= 1


@needs_festival
async def test_concurrent_same_text_synthesizes_once(tmp_path):
    f = FestivalEngine()
    s = Synthesizer([f], PromptCache(tmp_path, 10_000_000))
    results = await asyncio.gather(*(s.prompt(SENTENCE) for _ in range(5)))
    assert f.spawns == 1 and s.syntheses == 1
    assert len({r.path for r in results}) == 1
    assert sum(not r.cached for r in results) == 1


async def test_worker_pool_bounded_and_prepare(tmp_path):
    e = CountingEngine()
    s = Synthesizer([e], PromptCache(tmp_path, 10_000_000), max_workers=2)
    out = await s.prepare([f"фраза {i}" for i in range(6)] + ["фраза 0"])
    assert e.peak == 2 and e.calls == 6
    assert [a.duration_s for a in out] == [1.0] * 7


async def test_fallback_on_error_and_all_fail(tmp_path):
    bad, good = CountingEngine("bad", fail=True), CountingEngine("good")
    s = Synthesizer([bad, good], PromptCache(tmp_path, 10_000_000))
    assert (await s.prompt("да")).engine == "good"
    s2 = Synthesizer([CountingEngine("bad", fail=True)], PromptCache(tmp_path, 10_000_000))
    with pytest.raises(TtsError, match="no TTS engine"):
        await s2.prompt("нет")


async def test_text_limits(tmp_path):
    e = CountingEngine()
    s = Synthesizer([e], PromptCache(tmp_path, 10_000_000), max_chars=2000)
    with pytest.raises(TextTooLong, match="2001"):
        await s.prompt("я" * 2001)
    with pytest.raises(ValueError):
        await s.prompt("   ")
    assert e.calls == 0


def test_wav_parsing_and_resampling():
    import io
    import wave
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(b"\x00\x10" * 22050)
    data = buf.getvalue()
    frames, rate, ch, width = wav_to_pcm(data)
    assert (len(frames), rate, ch, width) == (44100, 22050, 1, 2)
    # Streaming header with a bogus data size (as espeak-ng --stdout writes): read to the end.
    bogus = data[:40] + (0x7FFFF000).to_bytes(4, "little") + data[44:]
    assert wav_to_pcm(bogus)[0] == frames
    out = resample_linear(frames, 22050, 8000)
    assert len(out) == 2 * 8000 and set(out[i:i + 2] for i in range(0, len(out), 2)) == {b"\x00\x10"}
    with pytest.raises(TtsError):
        wav_to_pcm(b"not a wav file at all")


@needs_festival
async def test_cancel_kills_the_process(tmp_path):
    f = FestivalEngine()
    task = asyncio.create_task(f.synthesize("Длинная фраза. " * 100, 8000))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(20):  # SIGKILL sent; give the kernel a moment
        r = subprocess.run(["pgrep", "-f", "ivr-tts-"], capture_output=True, text=True)
        if not r.stdout.strip():
            break
        await asyncio.sleep(0.1)
    assert r.stdout.strip() == ""  # no text2wave left reading our temporary file


def test_leading_silence_is_trimmed_to_20_ms():
    import array as _array

    from ivr.speech.tts import trim_leading_silence

    silence = _array.array("h", [0, 3, -2] * 800)             # 2400 quiet samples (300 ms at 8 kHz)
    speech = _array.array("h", [4000, -4000] * 400)
    trimmed = trim_leading_silence(silence.tobytes() + speech.tobytes(), 8000)
    assert len(trimmed) == 2 * (160 + len(speech))            # 20 ms of lead-in kept
    quiet = _array.array("h", [1, -1] * 100).tobytes()
    assert trim_leading_silence(quiet, 8000) == quiet          # nothing but silence: left alone
