"""SileroEngine (ivr/speech/silero.py) with a tiny Silero-like model that the test packages itself
with torch.package, the way Silero ships its models (``("tts_models", "model")``, torch externed):
real loading, synthesis on the worker thread, float -> 16-bit PCM, resampling to the telephone
rate, the Synthesizer using it, and the errors. No Silero weights exist offline (docs/tts.md)."""

import array
import importlib.util
import math
import shutil
import sys
import textwrap
import types
import zipfile

import pytest

from ivr.speech.cache import PromptCache
from ivr.speech.silero import SileroEngine, load_silero_model, tensor_to_pcm16
from ivr.speech.tts import Synthesizer, TtsError, TtsUnavailable

# torch.package's exporter pickles storages through the deprecated TypedStorage API
pytestmark = pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning")

needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None,
    reason="torch not installed: pip install -e '.[silero]' (scripts/bootstrap.sh installs the "
           "local CPU build of torch 2.13.0 when pip finds one)")

# The model's code, packaged as source (torch.package interns it; torch itself stays external).
# A tone per speaker, 60 ms per character, amplitude 0.5; it refuses Latin text like Silero's
# Russian models do, and records what it was asked.
FAKE_SILERO = textwrap.dedent('''
    import math
    import torch

    class FakeSilero(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.speakers = ["baya", "aidar"]
            self.register_buffer("freqs", torch.tensor([220.0, 150.0]))
            self.calls = []

        def apply_tts(self, text=None, speaker="baya", sample_rate=48000, put_accent=True, put_yo=True):
            if sample_rate not in (8000, 24000, 48000):
                raise ValueError(f"sample rate {sample_rate} is not supported")
            if any("a" <= c.lower() <= "z" for c in text):
                raise ValueError("Model couldn't generate your text")
            self.calls.append((text, speaker, sample_rate, put_accent, put_yo))
            n = len(text) * sample_rate * 60 // 1000
            t = torch.arange(n, dtype=torch.float32) / sample_rate
            return 0.5 * torch.sin(2 * math.pi * self.freqs[self.speakers.index(speaker)] * t)

    class NoTts:
        pass
''')

SENTENCE = "Здравствуйте, Пётр Николаевич!"  # 30 characters -> 1.8 s


def _package(path, obj_name: str = "FakeSilero", package: str = "tts_models", resource: str = "model"):
    """Write a torch.package with an instance of ``obj_name`` pickled under package/resource."""
    import torch.package

    mod = types.ModuleType("fake_silero")
    exec(compile(FAKE_SILERO, "fake_silero.py", "exec"), mod.__dict__)
    sys.modules["fake_silero"] = mod  # pickling finds the class through its module
    try:
        obj = getattr(mod, obj_name)()
        with torch.package.PackageExporter(str(path)) as exporter:
            exporter.extern(["torch", "torch.**"])
            exporter.save_source_string("fake_silero", FAKE_SILERO)
            exporter.save_pickle(package, resource, obj)
    finally:
        del sys.modules["fake_silero"]  # loading must go through the package, not this module
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return _package(tmp_path_factory.mktemp("silero") / "fake_ru.pt")


def samples(pcm: bytes) -> array.array:
    a = array.array("h")
    a.frombytes(pcm)
    if sys.byteorder == "big":
        a.byteswap()
    return a


def rms(pcm: bytes) -> float:
    a = samples(pcm)
    return math.sqrt(sum(x * x for x in a) / len(a))


def tone_hz(pcm: bytes, rate: int) -> float:
    """Frequency of a pure tone from its zero crossings."""
    a = samples(pcm)
    crossings = sum(1 for x, y in zip(a, a[1:]) if (x < 0) != (y < 0))
    return crossings / 2 / (len(a) / rate)


@needs_torch
async def test_loads_the_package_and_synthesizes_at_8k_directly(model_file):
    engine = SileroEngine(model_file, speaker="baya")
    try:
        pcm = await engine.synthesize(SENTENCE, 8000)
        model = engine._model
        # the class came from the package's own importer (its modules are mangled), not sys.modules
        assert type(model).__module__.startswith("<torch_package_") and type(model).__module__.endswith(".fake_silero")
        assert model.calls == [(SENTENCE, "baya", 8000, True, True)]  # Silero asked for 8 kHz: no resampling
        assert len(pcm) == 2 * len(SENTENCE) * 8000 * 60 // 1000  # 1.8 s of s16le
        assert 0.5 * 32767 / math.sqrt(2) * 0.98 < rms(pcm) < 0.5 * 32767 / math.sqrt(2) * 1.02
        assert abs(tone_hz(pcm, 8000) - 220) < 3
        assert max(samples(pcm)) <= 16384 and min(samples(pcm)) >= -16384  # 0.5 full scale
        assert engine.load_s is not None
        await engine.synthesize("Да.", 8000)
        assert len(model.calls) == 2 and engine._model is model  # loaded once
        assert engine.voice == "baya@fake_ru.pt"
    finally:
        engine.close()


@needs_torch
@pytest.mark.parametrize("sox", ["sox", None], ids=["sox", "python-resampler"])
async def test_resamples_24k_to_16k(model_file, sox):
    if sox and not shutil.which("sox"):
        pytest.skip("sox not installed (apt-get install sox)")
    engine = SileroEngine(model_file, speaker="aidar", sox=sox)
    try:
        pcm = await engine.synthesize(SENTENCE, 16000)  # 16 kHz is not a Silero rate: 24 kHz, resampled
        assert engine._model.calls[-1][2] == 24000
        assert abs(len(pcm) / 2 - 1.8 * 16000) < 50
        assert rms(pcm) > 10000
        assert abs(tone_hz(pcm, 16000) - 150) < 3  # the pitch survived the rate change
    finally:
        engine.close()


@needs_torch
async def test_explicit_model_rate_48k_down_to_8k(model_file):
    engine = SileroEngine(model_file, sample_rate=48000)
    try:
        pcm = await engine.synthesize(SENTENCE, 8000)
        assert engine._model.calls[-1][2] == 48000
        assert abs(len(pcm) / 2 - 1.8 * 8000) < 50
        assert abs(tone_hz(pcm, 8000) - 220) < 3
    finally:
        engine.close()


@needs_torch
async def test_synthesizer_caches_silero_prompts(model_file, tmp_path):
    engine = SileroEngine(model_file)
    try:
        syn = Synthesizer([engine], PromptCache(tmp_path, 10**8), 8000)
        first = await syn.prompt(SENTENCE)
        again = await syn.prompt(SENTENCE)
        assert first.engine == "silero" and not first.cached and again.cached and again.path == first.path
        assert 1.7 < first.duration_s <= 1.8
        assert len(engine._model.calls) == 1
    finally:
        engine.close()


@needs_torch
def test_tensor_to_pcm16_clips_and_scales():
    import torch

    pcm = tensor_to_pcm16(torch.tensor([[0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -3.0, float("nan")]]))
    assert list(samples(pcm)) == [0, 16384, -16384, 32767, -32767, 32767, -32767, 0]
    with pytest.raises(TtsError, match="shape"):
        tensor_to_pcm16(torch.zeros(2, 10))


# --- errors --------------------------------------------------------------------------------------

@needs_torch
async def test_missing_file(tmp_path):
    engine = SileroEngine(tmp_path / "v4_ru.pt")
    try:
        with pytest.raises(TtsUnavailable, match="v4_ru.pt not found"):
            await engine.synthesize(SENTENCE, 8000)
    finally:
        engine.close()


@needs_torch
def test_files_that_are_not_torch_packages(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(TtsUnavailable, match="not a torch package"):
        load_silero_model(junk)
    plain_zip = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain_zip, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(TtsUnavailable, match="plain.zip is not a torch package"):
        load_silero_model(plain_zip)


@needs_torch
def test_package_without_the_model_or_without_apply_tts(tmp_path):
    other = _package(tmp_path / "other.pt", resource="accentor")
    with pytest.raises(TtsUnavailable, match="cannot load tts_models/model"):
        load_silero_model(other)
    no_tts = _package(tmp_path / "no_tts.pt", obj_name="NoTts")
    with pytest.raises(TtsUnavailable, match="NoTts without apply_tts"):
        load_silero_model(no_tts)


@needs_torch
async def test_unknown_speaker_names_the_speakers(model_file):
    engine = SileroEngine(model_file, speaker="xenia")
    try:
        with pytest.raises(TtsUnavailable, match="no speaker 'xenia'; it has baya, aidar"):
            await engine.synthesize(SENTENCE, 8000)
    finally:
        engine.close()


@needs_torch
async def test_text_the_model_cannot_say_is_a_tts_error(model_file):
    engine = SileroEngine(model_file)
    try:
        with pytest.raises(TtsError, match="Silero failed on 'order ABC-12'") as e:
            await engine.synthesize("order ABC-12", 8000)
        assert not isinstance(e.value, TtsUnavailable)  # the engine stays in use for other texts
    finally:
        engine.close()


def test_unsupported_model_rate():
    with pytest.raises(ValueError, match="8000, 24000, 48000"):
        SileroEngine("/nonexistent.pt", sample_rate=16000)


async def test_without_torch_the_synthesizer_falls_back(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    monkeypatch.setitem(sys.modules, "torch.package", None)

    class Tone:
        name, voice = "tone", "a"

        async def synthesize(self, text, sample_rate):
            return b"\x10\x27" * sample_rate  # 1 s, not silent

    silero = SileroEngine(tmp_path / "v4_ru.pt")
    try:
        with pytest.raises(TtsUnavailable, match=r"torch is not installed.*\.\[silero\]"):
            await silero.synthesize(SENTENCE, 8000)
        audio = await Synthesizer([silero, Tone()], PromptCache(tmp_path / "cache", 10**8), 8000).prompt(SENTENCE)
        assert audio.engine == "tone"
    finally:
        silero.close()
