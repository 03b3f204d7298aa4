"""Silero TTS as an optional engine, for users who supply a Silero model file (docs/tts.md).

Silero's Russian models (``v3_1_ru.pt``, ``v4_ru.pt``, ...) are ``torch.package`` archives whose
model object is pickled under ``("tts_models", "model")``; ``model.apply_tts(text=, speaker=,
sample_rate=)`` returns a 1-D float tensor in [-1, 1]. Nothing is downloaded: the model file comes
from the admin, and torch is an optional extra (``pip install -e '.[silero]'``, the CPU build).

    engine = SileroEngine("/srv/models/v4_ru.pt", speaker="aidar")
    pcm = await engine.synthesize("Здравствуйте!", 8000)   # s16le mono at 8 kHz

* The model is loaded once, lazily, on the engine's own worker thread; synthesis runs there too
  (one at a time: the event loop never blocks and two calls never share the model at once).
* The model is asked for the telephone rate directly when it produces it (Silero: 8000, 24000,
  48000 Hz); otherwise for ``sample_rate`` (default 24000) and the audio is resampled with sox,
  or the pure-Python linear resampler when sox is missing (as for espeak-ng).
* ``TtsUnavailable`` (the Synthesizer falls back to the next engine and skips this one for a
  while): torch not installed, model file absent, not a torch package, no
  ``("tts_models", "model")`` with ``apply_tts`` in it, or a speaker the model does not have.
  ``TtsError``: the model failed on a text or returned no audio.

A torch package runs code from the file when loaded: use model files you trust.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import shutil
import threading
import time
import wave
import zipfile
from pathlib import Path
from typing import Any

from .tts import TtsError, TtsUnavailable, _Runner, _wav_to_slin

log = logging.getLogger(__name__)

# Rates Silero's v3/v4 models synthesize at (apply_tts raises on others).
SILERO_RATES = (8000, 24000, 48000)
PACKAGE, RESOURCE = "tts_models", "model"


def _import_torch():
    try:
        import torch
        import torch.package  # noqa: F401  (a separate submodule)
    except ImportError as e:
        raise TtsUnavailable(f"torch is not installed ({e}); Silero TTS needs the CPU build: "
                             "pip install -e '.[silero]' (see docs/tts.md)") from None
    return torch


def load_silero_model(model_path: Path | str, device: str = "cpu") -> Any:
    """The model object of a Silero ``torch.package`` file; ``TtsUnavailable`` naming what is wrong."""
    torch = _import_torch()
    path = Path(model_path)
    if not path.is_file():
        raise TtsUnavailable(f"Silero model file {path} not found")
    if not zipfile.is_zipfile(path):
        raise TtsUnavailable(f"{path} is not a torch package (not a zip archive)")
    try:
        importer = torch.package.PackageImporter(str(path))
    except Exception as e:  # RuntimeError from the zip reader, missing .data/ records, ...
        raise TtsUnavailable(f"{path} is not a torch package: {e}") from None
    try:
        model = importer.load_pickle(PACKAGE, RESOURCE)
    except Exception as e:  # no such resource, or the pickle needs code the package lacks
        raise TtsUnavailable(f"{path}: cannot load {PACKAGE}/{RESOURCE} from the torch package "
                             f"({type(e).__name__}: {e})") from None
    if not callable(getattr(model, "apply_tts", None)):
        raise TtsUnavailable(f"{path}: {PACKAGE}/{RESOURCE} is a {type(model).__name__} "
                             "without apply_tts: not a Silero TTS model")
    if hasattr(model, "to"):
        model.to(torch.device(device))
    return model


def tensor_to_pcm16(audio: Any) -> bytes:
    """A float waveform in [-1, 1] (torch tensor, 1-D or batch of one) -> s16le bytes."""
    torch = _import_torch()
    t = torch.as_tensor(audio).detach().to("cpu", torch.float32)
    if t.dim() == 2 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 1:
        raise TtsError(f"Silero returned audio of shape {tuple(t.shape)}, expected one channel")
    t = torch.nan_to_num(t, nan=0.0).clamp(-1.0, 1.0)
    return (t * 32767.0).round().to(torch.int16).numpy().astype("<i2").tobytes()


class SileroEngine:
    """``TtsEngine`` over a Silero model file (``torch.package``). See the module doc."""

    name = "silero"

    def __init__(self, model_path: Path | str, speaker: str = "baya", sample_rate: int | None = None, *,
                 device: str = "cpu", put_accent: bool = True, put_yo: bool = True,
                 sox: str | None = "sox", timeout_s: float = 60.0):
        if sample_rate is not None and sample_rate not in SILERO_RATES:
            raise ValueError(f"Silero synthesizes at {', '.join(map(str, SILERO_RATES))} Hz, "
                             f"not {sample_rate}")
        self.model_path = Path(model_path)
        self.speaker = speaker
        self.model_rate = sample_rate
        self.device = device
        self.options = {"put_accent": put_accent, "put_yo": put_yo}
        self.sox = sox
        # the cache key names speaker and model file: another model never serves stale prompts
        self.voice = f"{speaker}@{self.model_path.name}"
        self._runner = _Runner(timeout_s)  # sox, when resampling
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="silero")
        self._load_lock = threading.Lock()
        self._model: Any = None
        self.load_s: float | None = None

    def _rate_for(self, sample_rate: int) -> int:
        if self.model_rate is not None:
            return self.model_rate
        return sample_rate if sample_rate in SILERO_RATES else 24000

    def _model_loaded(self) -> Any:
        with self._load_lock:
            if self._model is None:
                t = time.perf_counter()
                model = load_silero_model(self.model_path, self.device)
                speakers = getattr(model, "speakers", None)
                if speakers is not None and self.speaker not in speakers:
                    raise TtsUnavailable(f"{self.model_path.name} has no speaker {self.speaker!r}; "
                                         f"it has {', '.join(map(str, speakers))}")
                self._model = model
                self.load_s = time.perf_counter() - t
                log.info("Silero model %s loaded in %.2f s", self.model_path, self.load_s)
            return self._model

    def _synthesize_sync(self, text: str, rate: int) -> bytes:
        model = self._model_loaded()
        torch = _import_torch()
        try:
            with torch.inference_mode():
                audio = model.apply_tts(text=text, speaker=self.speaker, sample_rate=rate, **self.options)
        except Exception as e:  # Silero raises ValueError/RuntimeError/Exception on text it cannot say
            raise TtsError(f"Silero failed on {text[:60]!r}: {type(e).__name__}: {e}") from None
        pcm = tensor_to_pcm16(audio)
        if not pcm:
            raise TtsError("Silero produced no audio")
        return pcm

    async def load(self) -> None:
        """Load the model now (at start-up) instead of on the first prompt."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._model_loaded)

    async def synthesize(self, text: str, sample_rate: int) -> bytes:
        rate = self._rate_for(sample_rate)
        pcm = await asyncio.get_running_loop().run_in_executor(
            self._executor, self._synthesize_sync, text, rate)
        if rate == sample_rate:
            return pcm
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm)
        sox = shutil.which(self.sox) if self.sox else None
        return await _wav_to_slin(self._runner, buf.getvalue(), sample_rate, sox)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
