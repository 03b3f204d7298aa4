"""End of speech detection with the real Silero VAD ONNX model (the silero-vad wheel;
scripts/bootstrap.sh installs it) on Festival-synthesised Russian answers at 8 and 16 kHz."""

import shutil
import subprocess
import time
import wave

import numpy as np
import pytest

from ivr.speech.models import ModelNotInstalled, silero_vad_onnx


def _vad_missing() -> str | None:
    try:
        silero_vad_onnx()
        import onnxruntime  # noqa: F401
    except (ModelNotInstalled, ImportError) as e:
        return str(e)
    return None


def _festival_missing() -> str | None:
    if not shutil.which("text2wave"):
        return "Festival not installed (apt-get install festival festvox-ru)"
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "festvox-ru"], capture_output=True, text=True)
    return None if "install ok installed" in r.stdout else "festvox-ru not installed (apt-get install festvox-ru)"


_why = _vad_missing()
pytestmark = [pytest.mark.models, pytest.mark.skipif(_why is not None, reason=f"Silero VAD model: {_why}")]
needs_festival = pytest.mark.skipif(_festival_missing() is not None, reason=str(_festival_missing()))

if _why is None:
    from ivr.speech.vad import (EndOfSpeechDetector, NoSpeech, SileroVad, SpeechEnded, SpeechStarted,
                                speech_probabilities)

_audio: dict[tuple[str, int], bytes] = {}


def festival(text: str, rate: int = 8000, tmp="/tmp") -> bytes:
    """Raw s16le mono from text2wave (cached per text and rate)."""
    key = (text, rate)
    if key not in _audio:
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            src, dst = f"{d}/in.txt", f"{d}/out.wav"
            open(src, "w", encoding="utf-8").write(text + "\n")
            subprocess.run(["text2wave", "-F", str(rate), "-eval", "(voice_msu_ru_nsh_clunits)", src, "-o", dst],
                           check=True, capture_output=True, timeout=60)
            with wave.open(dst) as w:
                assert w.getframerate() == rate and w.getnchannels() == 1 and w.getsampwidth() == 2
                _audio[key] = w.readframes(w.getnframes())
    return _audio[key]


def silence(seconds: float, rate: int = 8000) -> bytes:
    return bytes(2 * int(seconds * rate))


def noise(seconds: float, rate: int = 8000, rms: float = 300.0, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, rms, int(seconds * rate)), -32768, 32767).astype("<i2").tobytes()


def speech_bounds(pcm: bytes, rate: int) -> tuple[float, float]:
    """Where the synthesised speech really is (first/last sample above a small amplitude)."""
    a = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32))
    idx = np.nonzero(a > 500)[0]
    return idx[0] / rate, idx[-1] / rate


def feed_frames(det, pcm: bytes, frame_ms: int = 20):
    step = 2 * det.sample_rate * frame_ms // 1000
    events = []
    for i in range(0, len(pcm), step):
        events += [(i / (2 * det.sample_rate), e) for e in det.feed(pcm[i:i + step])]
    return events


@needs_festival
@pytest.mark.parametrize("rate", [8000, 16000])
def test_start_and_end_of_speech(rate):
    answer = festival("в понедельник утром", rate)
    lead = 1.0
    audio = silence(lead, rate) + answer + silence(2.0, rate)
    s0, s1 = speech_bounds(answer, rate)
    s0, s1 = lead + s0, lead + s1
    det = EndOfSpeechDetector(rate)  # defaults: end after 0.5 s of silence
    events = feed_frames(det, audio)  # 20 ms RTP-sized frames
    kinds = [type(e) for _, e in events]
    assert kinds == [SpeechStarted, SpeechEnded], events
    started, ended = events[0][1], events[1][1]
    assert s0 - 0.1 <= started.at_s <= s0 + 0.3, (started, s0)
    # the end is decided ~0.5 s after the speech stops (the model's own tail adds a little)
    assert s1 + 0.4 <= ended.at_s <= s1 + 0.9, (ended.at_s, s1)
    utt = ended.utterance
    assert utt.reason == "silence" and utt.sample_rate == rate
    assert utt.start_s <= s0 + 0.3 and utt.end_s >= s1 - 0.2
    # the utterance holds the whole answer plus a little padding, not the trailing silence
    assert (s1 - s0) <= utt.duration_s <= (s1 - s0) + 0.8, (utt.duration_s, s1 - s0)
    assert det.done and det.feed(answer) == []  # finished: further audio is ignored


@needs_festival
def test_end_silence_is_configurable():
    answer = festival("да")
    audio = silence(0.5) + answer + silence(3.0)
    at = {}
    for ms in (300, 500, 1500):
        det = EndOfSpeechDetector(8000, end_silence_ms=ms)
        ended = [e for e in det.feed(audio) if isinstance(e, SpeechEnded)]
        assert len(ended) == 1
        at[ms] = ended[0].at_s
    assert at[300] < at[500] < at[1500]
    assert at[1500] - at[500] == pytest.approx(1.0, abs=0.1)


@needs_festival
def test_a_pause_shorter_than_the_end_silence_keeps_one_utterance():
    audio = silence(0.5) + festival("нет") + silence(0.25) + festival("перезвоните завтра") + silence(1.5)
    events = EndOfSpeechDetector(8000, end_silence_ms=600).feed(audio)
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
    assert events[1].utterance.duration_s > 2.0


def test_silence_and_noise_give_no_speech():
    for audio in (silence(6.0), noise(6.0), noise(6.0, rms=2000, seed=2)):
        det = EndOfSpeechDetector(8000, no_speech_timeout_s=4.0)
        events = feed_frames(det, audio)
        assert [type(e) for _, e in events] == [NoSpeech], events
        assert events[0][1].at_s == pytest.approx(4.0, abs=0.05)
        assert max(det.probabilities) < det.threshold


def test_no_speech_timeout_can_be_disabled():
    det = EndOfSpeechDetector(8000, no_speech_timeout_s=None)
    assert det.feed(silence(8.0)) == [] and not det.done


@needs_festival
def test_maximum_utterance_length():
    long = festival("перезвоните завтра в десять часов утра, пожалуйста, мне сейчас неудобно говорить")
    det = EndOfSpeechDetector(8000, max_utterance_s=1.5)
    events = det.feed(silence(0.3) + long + silence(1.0))
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
    utt = events[1].utterance
    assert utt.reason == "max_length"
    assert events[1].at_s - events[0].at_s == pytest.approx(1.5, abs=0.1)
    assert 1.4 <= utt.duration_s <= 1.5 + 0.2 + 0.1  # up to the cut, plus the leading padding


@needs_festival
def test_frame_size_does_not_change_the_result():
    audio = silence(0.7) + festival("да") + silence(1.0)
    whole = EndOfSpeechDetector(8000)
    ev_whole = whole.feed(audio)
    small = EndOfSpeechDetector(8000)
    ev_small = [e for _, e in feed_frames(small, audio, frame_ms=10)]
    assert ev_whole == ev_small
    assert list(whole.probabilities) == pytest.approx(list(small.probabilities), abs=1e-5)


@needs_festival
def test_reset_listens_again():
    det = EndOfSpeechDetector(8000)
    audio = silence(0.3) + festival("да") + silence(1.0)
    first = det.feed(audio)
    det.reset()
    assert not det.done and list(det.probabilities) == []
    assert det.feed(audio) == first


@needs_festival
def test_vad_cost_is_small():
    """~0.2 ms of CPU per 32 ms window idle, ~1 ms under load: fine on the event loop for RTP frames."""
    audio = (silence(0.5) + festival("перезвоните завтра в десять")) * 4
    det = EndOfSpeechDetector(8000, end_silence_ms=5000, max_utterance_s=60)
    t0 = time.perf_counter()
    feed_frames(det, audio)
    rtf = (time.perf_counter() - t0) / (len(audio) / 16000)
    assert rtf < 0.1, rtf  # 0.006 idle, 0.03 with the machine at load 4-5


def test_model_windows_and_rates():
    with pytest.raises(ValueError):
        EndOfSpeechDetector(11025)
    vad = SileroVad(8000)
    assert vad.window == 256 and SileroVad(16000).window == 512
    with pytest.raises(ValueError):
        vad(np.zeros(100, dtype=np.float32))
    assert speech_probabilities(silence(1.0)) == pytest.approx([0.0] * 31, abs=0.1)
