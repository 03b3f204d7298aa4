"""Speech recognition with the real models: Whisper base (assembled from its two PyPI wheels),
Vosk with the Korean model wheel (the real loading/streaming/grammar code; no Russian Vosk model
is on PyPI), the worker pool (the event loop keeps running while decoding; overload is refused).
Answers are synthesised by Festival (festvox-ru) at 8 kHz, the telephone rate.

Model tests are marked ``models``; they skip only when a model is not installed
(scripts/bootstrap.sh installs all of them, so in CI they run)."""

import asyncio
import hashlib
import shutil
import subprocess
import tempfile
import time
import wave

import numpy as np
import pytest

from ivr.speech import models
from ivr.speech.asr import (AsrOverloaded, AsrPool, AsrUnavailable, Segment, Transcript, VoskEngine,
                            WhisperEngine, normalize_transcript, resample)
from ivr.speech.models import ModelCorrupt, ModelNotInstalled


def _missing(check) -> str | None:
    try:
        check()
    except (ModelNotInstalled, ImportError) as e:
        return str(e)
    return None


def _whisper_check():
    """The model is usable: faster-whisper plus an assembled folder, or the wheels to assemble it."""
    import faster_whisper  # noqa: F401
    if not models.whisper_base_ready():
        models._whisper_sources()


def _wheels_check():
    models._whisper_sources()


def _vosk_check():
    import vosk  # noqa: F401
    models.vosk_korean_model()


def _festival_check():
    if not shutil.which("text2wave"):
        raise ImportError("Festival not installed (apt-get install festival festvox-ru)")
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "festvox-ru"], capture_output=True, text=True)
    if "install ok installed" not in r.stdout:
        raise ImportError("festvox-ru not installed (apt-get install festvox-ru)")


_no_whisper, _no_vosk, _no_festival = _missing(_whisper_check), _missing(_vosk_check), _missing(_festival_check)
needs_whisper = [pytest.mark.models,
                 pytest.mark.skipif(_no_whisper is not None, reason=f"Whisper base: {_no_whisper}")]
_no_wheels = _missing(_wheels_check)
needs_wheels = [pytest.mark.models,
                pytest.mark.skipif(_no_wheels is not None, reason=f"Whisper base wheels: {_no_wheels}")]
needs_vosk = [pytest.mark.models, pytest.mark.skipif(_no_vosk is not None, reason=f"Vosk model: {_no_vosk}")]
needs_festival = pytest.mark.skipif(_no_festival is not None, reason=str(_no_festival))


def mark(marks):
    def apply(f):
        for m in reversed(marks):
            f = m(f)
        return f
    return apply


_audio: dict[tuple[str, int], bytes] = {}


def festival(text: str, rate: int = 8000) -> bytes:
    key = (text, rate)
    if key not in _audio:
        with tempfile.TemporaryDirectory() as d:
            src, dst = f"{d}/in.txt", f"{d}/out.wav"
            open(src, "w", encoding="utf-8").write(text + "\n")
            subprocess.run(["text2wave", "-F", str(rate), "-eval", "(voice_msu_ru_nsh_clunits)", src, "-o", dst],
                           check=True, capture_output=True, timeout=60)
            with wave.open(dst) as w:
                _audio[key] = w.readframes(w.getnframes())
    return _audio[key]


def silence(seconds: float, rate: int = 8000) -> bytes:
    return bytes(2 * int(seconds * rate))


@pytest.fixture(scope="module")
def whisper():
    e = WhisperEngine()  # the folder bootstrap assembles (assembled here on first load if missing)
    e.load()
    return e


@pytest.fixture(scope="module")
def vosk_ko():
    e = VoskEngine(models.vosk_korean_model(), language="ko")
    e.load()
    return e


# --- no models -----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, norm", [
    (" Да.", "да"),
    ("Нет, лучше ЗАВТРА!", "нет лучше завтра"),
    ("Перезвоните завтра в 10.", "перезвоните завтра в 10"),
    ("В пятницу в 15:30", "в пятницу в 15:30"),
    ("в 15.30", "в 15:30"),
    ("Ещё — не сейчас...", "еще не сейчас"),
    ("Кое-как", "кое-как"),
    ("", ""),
])
def test_normalize_transcript(raw, norm):
    assert normalize_transcript(raw) == norm


def test_resample_8k_to_16k_keeps_a_tone():
    t = np.arange(8000) / 8000
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    y = resample(x, 8000, 16000)
    assert y.dtype == np.float32 and y.size == 16000
    spectrum = np.abs(np.fft.rfft(y))
    assert np.argmax(spectrum) == pytest.approx(440, abs=1)  # 1 s of audio: bin = Hz
    assert resample(x, 16000, 16000) is x or np.array_equal(resample(x, 16000, 16000), x)


# --- model assembly ----------------------------------------------------------------------------

@mark(needs_wheels)
def test_assemble_whisper_base_verified_atomic_idempotent(tmp_path):
    dest = tmp_path / "whisper-base"
    t0 = time.monotonic()
    assert models.assemble_whisper_base(dest) == dest
    took = time.monotonic() - t0
    h = hashlib.sha256()
    with open(dest / "model.bin", "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    assert h.hexdigest() == models.WHISPER_BASE_SHA256
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [".assembled.json", "model.bin", "config.json", "tokenizer.json", "vocabulary.json"])
    assert [p.name for p in tmp_path.iterdir()] == ["whisper-base"]  # no temporaries left
    assert models.whisper_base_ready(dest)
    mtime = (dest / "model.bin").stat().st_mtime_ns
    models.assemble_whisper_base(dest)  # idempotent: nothing rewritten
    assert (dest / "model.bin").stat().st_mtime_ns == mtime
    # a damaged folder (truncated model.bin) is not "ready" and is rebuilt
    with open(dest / "model.bin", "r+b") as f:
        f.truncate(1000)
    assert not models.whisper_base_ready(dest)
    models.assemble_whisper_base(dest)
    assert models.whisper_base_ready(dest) and (dest / "model.bin").stat().st_size > 100_000_000
    print(f"assembly {took:.2f} s")


@mark(needs_wheels)
def test_assembly_with_a_wrong_checksum_leaves_nothing(tmp_path):
    dest = tmp_path / "whisper-base"
    with pytest.raises(ModelCorrupt):
        models.assemble_whisper_base(dest, expected_sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


@mark(needs_wheels)
def test_concurrent_assemblies_of_one_folder(tmp_path):
    """Two bootstraps (or a bootstrap and a test) at once: both succeed, one complete folder."""
    from concurrent.futures import ThreadPoolExecutor
    dest = tmp_path / "wb"
    with ThreadPoolExecutor(3) as ex:
        results = list(ex.map(lambda _: models.assemble_whisper_base(dest), range(3)))
    assert results == [dest] * 3
    assert [p.name for p in tmp_path.iterdir()] == ["wb"] and models.whisper_base_ready(dest)


@mark(needs_wheels)
def test_models_cli(tmp_path, capsys):
    dest = tmp_path / "m"
    assert models.main(["--check", "--dest", str(dest)]) == 1
    assert models.main(["--dest", str(dest)]) == 0
    assert "assembled in" in capsys.readouterr().out
    assert models.main(["--dest", str(dest)]) == 0
    assert "already assembled" in capsys.readouterr().out
    assert models.main(["--check", "--dest", str(dest)]) == 0


# --- Whisper -----------------------------------------------------------------------------------

ANSWERS = [
    ("да", [{"да"}]),
    ("нет", [{"нет"}]),
    ("в понедельник утром", [{"понедельник"}, {"утром"}]),
    ("перезвоните завтра в десять", [{"перезвоните"}, {"завтра"}, {"десять", "10"}]),
]


@mark(needs_whisper)
@needs_festival
@pytest.mark.parametrize("text, expected", ANSWERS, ids=[a[0] for a in ANSWERS])
def test_whisper_understands_festival_answers_at_8k(whisper, text, expected):
    pcm = silence(0.2) + festival(text) + silence(0.3)  # as the VAD cuts it: a little padding
    t = whisper.recognize(pcm, 8000)
    assert isinstance(t, Transcript) and t.engine == "whisper" and t.language == "ru"
    words = set(t.normalized.split())
    for alternatives in expected:
        assert words & alternatives, (t.text, alternatives)
    assert t.duration_s == pytest.approx(len(pcm) / 16000)
    assert t.elapsed_s > 0 and t.segments
    print(f"{text!r} -> {t.text!r} {t.duration_s:.2f} s audio, {t.elapsed_s:.2f} s, RTF {t.rtf:.2f}")


@mark(needs_whisper)
@needs_festival
def test_whisper_16k_and_word_timestamps():
    e = WhisperEngine(word_timestamps=True)
    t = e.recognize(festival("нет", 16000), 16000)
    assert "нет" in t.normalized.split()
    assert t.words and all(w.end_s >= w.start_s for w in t.words)


@mark(needs_whisper)
@needs_festival
def test_vad_cut_utterance_to_whisper(whisper):
    """The audio path: 20 ms frames -> end of speech -> the utterance -> Whisper."""
    pytest.importorskip("onnxruntime")
    no_vad = _missing(models.silero_vad_onnx)
    if no_vad:
        pytest.skip(f"Silero VAD model: {no_vad}")
    from ivr.speech.vad import EndOfSpeechDetector, SpeechEnded
    audio = silence(1.0) + festival("да") + silence(1.5)
    det = EndOfSpeechDetector(8000)
    ended = [e for i in range(0, len(audio), 320) for e in det.feed(audio[i:i + 320]) if isinstance(e, SpeechEnded)]
    assert len(ended) == 1
    assert "да" in whisper.recognize(ended[0].utterance.pcm, 8000).normalized.split()


@mark(needs_whisper)
@needs_festival
def test_whisper_noise_is_flagged_suspect(whisper):
    """Whisper invents text on noise (subtitle credits, "ТРЕВОЖНАЯ МУЗЫКА"): flagged, not trusted."""
    rng = np.random.default_rng(1)
    for pcm in (rng.normal(0, 300, 8000).astype("<i2").tobytes(), rng.normal(0, 3000, 24000).astype("<i2").tobytes()):
        t = whisper.recognize(pcm, 8000)
        assert t.text == "" or t.suspect, (t.text, t.no_speech_prob)
    assert whisper.recognize(silence(1.0), 8000).text == ""
    for answer in ("да", "перезвоните завтра в десять"):
        assert not whisper.recognize(silence(0.2) + festival(answer) + silence(0.3), 8000).suspect


def test_suspect_phrases():
    def t(text, nsp=0.1):
        return Transcript(text, "ru", 1.0, 0.1, "whisper", segments=(Segment(text, 0, 1, -0.5, nsp),))

    assert t("Редактор субтитров А.Синецкая").suspect and t("ТРЕВОЖНАЯ МУЗЫКА").suspect
    assert t("Продолжение следует...").suspect and t("Да.", nsp=0.7).suspect
    assert not t("Да.").suspect and not t("Нет, лучше завтра").suspect and not t("Удобно").suspect


@mark(needs_whisper)
def test_whisper_missing_model_folder(tmp_path):
    with pytest.raises(AsrUnavailable, match="no Whisper model"):
        WhisperEngine(tmp_path / "nothing").load()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.bin").write_bytes(b"not a model")
    with pytest.raises(AsrUnavailable, match="cannot load"):
        WhisperEngine(tmp_path / "bad").load()


# --- pool --------------------------------------------------------------------------------------

async def _max_loop_lag(work, period=0.005):
    """Run ``work`` while a ticker measures how late the event loop wakes it (the loop lag)."""
    lag, done = [0.0], asyncio.Event()

    async def ticker():
        while not done.is_set():
            t = time.perf_counter()
            await asyncio.sleep(period)
            lag[0] = max(lag[0], time.perf_counter() - t - period)

    task = asyncio.create_task(ticker())
    try:
        result = await work
    finally:
        done.set()
        await task
    return result, lag[0]


@mark(needs_whisper)
@needs_festival
async def test_pool_never_blocks_the_loop(whisper):
    pool = AsrPool(whisper, max_workers=1, max_queue=4)
    try:
        pcms = [festival(a[0]) for a in ANSWERS]
        results, lag = await _max_loop_lag(asyncio.gather(*(pool.transcribe(p, 8000) for p in pcms)))
        assert [("да" in r.normalized) for r in results][0]
        assert results[-1].queued_s > 0  # one worker: the others waited
        busy = sum(r.elapsed_s for r in results)
        print(f"4 answers, {busy:.2f} s of decoding; max loop lag {lag * 1000:.1f} ms")
        # A blocked loop would lag by whole decodes (~0.5-3 s); the GIL is held only briefly.
        assert lag < 0.15, lag
        assert pool.stats()["completed"] == 4 and pool.inflight == 0
    finally:
        pool.close()


@mark(needs_whisper)
@needs_festival
async def test_pool_refuses_when_overloaded(whisper):
    pool = AsrPool(whisper, max_workers=1, max_queue=1)
    try:
        pcm = festival("перезвоните завтра в десять")
        first = asyncio.ensure_future(pool.transcribe(pcm, 8000))
        second = asyncio.ensure_future(pool.transcribe(pcm, 8000))
        await asyncio.sleep(0)
        assert pool.inflight == 2
        t0 = time.monotonic()
        with pytest.raises(AsrOverloaded, match="overloaded"):
            await pool.transcribe(pcm, 8000)
        assert time.monotonic() - t0 < 0.05  # refused at once, not queued
        a, b = await asyncio.gather(first, second)
        assert "завтра" in a.normalized and a.text == b.text
        assert pool.stats()["refused"] == 1
        # capacity is back once they finished
        assert "завтра" in (await pool.transcribe(pcm, 8000)).normalized
    finally:
        pool.close()


@mark(needs_whisper)
@needs_festival
async def test_pool_counts_a_recognition_until_the_worker_finishes(whisper):
    pool = AsrPool(whisper, max_workers=1, max_queue=0, timeout_s=None)
    try:
        task = asyncio.ensure_future(pool.transcribe(festival("перезвоните завтра в десять"), 8000))
        await asyncio.sleep(0.05)
        task.cancel()  # the caller hung up; the decode still occupies the worker
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(AsrOverloaded):
            await pool.transcribe(festival("да"), 8000)
        for _ in range(200):
            if pool.inflight == 0:
                break
            await asyncio.sleep(0.05)
        assert pool.inflight == 0
        assert "да" in (await pool.transcribe(festival("да"), 8000)).normalized
    finally:
        pool.close()


async def test_pool_rejects_other_rates():
    pool = AsrPool(WhisperEngine(), max_workers=1)
    try:
        with pytest.raises(ValueError):
            await pool.transcribe(b"\0\0" * 100, 44100)
    finally:
        pool.close()


# --- Vosk --------------------------------------------------------------------------------------

@mark(needs_vosk)
@needs_festival
def test_vosk_loads_and_streams(vosk_ko):
    """Free-form recognition through the real streaming code (Korean model, Russian audio: any
    result is fine, the point is the code path)."""
    assert vosk_ko.load_s is not None and vosk_ko.load_s > 0
    pcm = silence(0.3) + festival("перезвоните завтра в десять") + silence(0.5)
    t = vosk_ko.recognize(pcm, 8000)
    assert t.engine == "vosk" and t.language == "ko"
    assert t.duration_s == pytest.approx(len(pcm) / 16000)
    assert all(w.start_s <= w.end_s <= t.duration_s + 0.1 for w in t.words)
    assert vosk_ko.recognize(silence(1.0), 16000).text == ""
    print(f"vosk-ko: {t.text!r} in {t.elapsed_s:.2f} s (load {vosk_ko.load_s:.2f} s)")


@mark(needs_vosk)
@needs_festival
def test_vosk_grammar_restricts_the_words(vosk_ko):
    grammar = ["네", "아니요", "[unk]"]
    pcm = festival("да") + silence(0.3) + festival("нет")
    t = vosk_ko.recognize(pcm, 8000, grammar=grammar)
    assert set(t.text.split()) <= set(grammar), t.text
    g = vosk_ko.with_grammar(["네", "아니요"])
    assert g._model is vosk_ko._model  # the model is shared, not loaded again
    assert set(g.recognize(pcm, 8000).text.split()) <= {"네", "아니요"}


@mark(needs_vosk)
@needs_festival
def test_vosk_frame_by_frame_partials(vosk_ko):
    """What the call flow does with RTP frames: 20 ms AcceptWaveform calls, partial results."""
    import json
    rec = vosk_ko.recognizer(8000)
    pcm = festival("в понедельник утром") + silence(1.0)
    partials = []
    for i in range(0, len(pcm), 320):
        if not rec.AcceptWaveform(pcm[i:i + 320]):
            partials.append(json.loads(rec.PartialResult())["partial"])
    final = json.loads(rec.FinalResult())
    assert "text" in final and len(partials) > 10


@mark(needs_vosk)
async def test_vosk_in_the_pool(vosk_ko):
    pool = AsrPool(vosk_ko.with_grammar(["네", "아니요"]), max_workers=2)
    try:
        rs = await asyncio.gather(*(pool.transcribe(silence(0.5), 8000) for _ in range(3)))
        assert [r.text for r in rs] == ["", "", ""]
    finally:
        pool.close()


def test_vosk_missing_model_folder(tmp_path):
    pytest.importorskip("vosk")
    with pytest.raises(AsrUnavailable, match="not a Vosk model folder"):
        VoskEngine(tmp_path).load()
