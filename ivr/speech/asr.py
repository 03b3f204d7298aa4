"""Speech recognition for the clients' spoken answers: faster-whisper + Whisper base by default,
Vosk (grammar-restricted) as an optional engine for a user-supplied model folder.

* Engines are blocking (``SyncEngine``: ``load()``, ``recognize(pcm, sample_rate)``), loaded once
  and lazily; :class:`AsrPool` runs them in a small thread pool so the event loop never blocks
  (CTranslate2 and Kaldi release the GIL while decoding; docs/asr.md has the measured loop lag)
  and is the :class:`Recognizer` the call flow uses: ``await pool.transcribe(pcm, 8000)``.
* The pool is bounded: ``max_workers`` recognitions at once and at most ``max_queue`` waiting;
  one more raises :class:`AsrOverloaded` at once (the caller falls back to keys) instead of
  letting latency grow without limit.
* Whisper decodes with temperature 0 only (no fallback: it made short answers take seconds),
  no initial prompt (expected answers in the prompt produced false accepts), no built-in VAD
  (the utterance is already cut by ivr/speech/vad.py), language "ru". Telephone audio (8 kHz) is
  resampled to Whisper's 16 kHz.

See docs/asr.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from .models import ModelNotInstalled, assemble_whisper_base, whisper_base_dir, whisper_base_ready

log = logging.getLogger(__name__)

WHISPER_RATE = 16000


class AsrError(RuntimeError):
    """Recognition failed."""


class AsrUnavailable(AsrError):
    """The engine or its model is not installed (the message says how to install it)."""


class AsrOverloaded(AsrError):
    """Too many recognitions running and waiting: the request was refused, not queued."""


@dataclass(frozen=True)
class Word:
    word: str
    start_s: float
    end_s: float
    probability: float


@dataclass(frozen=True)
class Segment:
    text: str
    start_s: float
    end_s: float
    avg_logprob: float | None = None
    no_speech_prob: float | None = None


@dataclass(frozen=True)
class Transcript:
    text: str                 # as the engine wrote it (Whisper: capitals, punctuation, digits)
    language: str
    duration_s: float         # audio length
    elapsed_s: float          # recognition time (without queueing)
    engine: str
    segments: tuple[Segment, ...] = ()
    words: tuple[Word, ...] = ()
    queued_s: float = 0.0     # time spent waiting for a worker (AsrPool)

    @property
    def rtf(self) -> float:
        return self.elapsed_s / self.duration_s if self.duration_s else 0.0

    @property
    def normalized(self) -> str:
        return normalize_transcript(self.text)

    @property
    def no_speech_prob(self) -> float:
        """Whisper's highest no-speech probability over the segments (0 for Vosk / no segments)."""
        return max((s.no_speech_prob or 0.0 for s in self.segments), default=0.0)

    @property
    def suspect(self) -> bool:
        """Likely not the caller's words: Whisper's no-speech probability is high, or the text is
        one of the subtitle credits / sound captions Whisper invents on noise ("ТРЕВОЖНАЯ МУЗЫКА",
        "Редактор субтитров ..."). The understanding layer should treat it as no answer."""
        return self.no_speech_prob >= NO_SPEECH_SUSPECT or bool(HALLUCINATION.search(self.normalized))


# Whisper on noise or silence (measured here: white noise -> "ТРЕВОЖНАЯ МУЗЫКА", "Редактор
# субтитров А.Синецкая Корректор А.Егорова", both with no_speech_prob 0.66-0.73; Festival "да" 0.34).
NO_SPEECH_SUSPECT = 0.6
HALLUCINATION = re.compile(
    r"субтитр|редактор|корректор|продолжение следует|спасибо за просмотр|подписывайтесь|"
    r"dimatorzok|музыка|аплодисменты|смех|^(шум|тишина)$")


def normalize_transcript(text: str) -> str:
    """Lower case, ё -> е, punctuation removed (digits, ':' inside times and hyphens inside words kept)."""
    t = text.lower().replace("ё", "е")
    t = re.sub(r"(?<=\d)[:.](?=\d)", ":", t)
    t = re.sub(r"[^\w\s:-]|_", " ", t)
    t = re.sub(r"(?<!\w)-|-(?!\w)", " ", t)
    return re.sub(r"\s+", " ", t).strip()


@runtime_checkable
class Recognizer(Protocol):
    name: str

    async def transcribe(self, pcm: bytes, sample_rate: int) -> Transcript:
        """``pcm``: s16le mono at ``sample_rate`` (8000 or 16000)."""
        ...


@runtime_checkable
class SyncEngine(Protocol):
    name: str

    def load(self) -> None:
        ...

    def recognize(self, pcm: bytes, sample_rate: int) -> Transcript:
        ...


# --- audio -------------------------------------------------------------------------------------

def pcm_to_float(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm[:len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float32) / 32768.0


def resample(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample float32 mono by linear interpolation (the numpy twin of
    ``ivr.speech.tts.resample_linear``). For 8 -> 16 kHz it was measured against a windowed-sinc
    interpolator: Whisper recognised the Festival answers at least as well (docs/asr.md)."""
    if src_rate == dst_rate or x.size == 0:
        return x.astype(np.float32, copy=False)
    n_out = int(round(x.size * dst_rate / src_rate))
    t = np.arange(n_out, dtype=np.float64) * (src_rate / dst_rate)
    return np.interp(t, np.arange(x.size), x).astype(np.float32)


# --- Whisper -----------------------------------------------------------------------------------

class WhisperEngine:
    """faster-whisper on the CPU (int8). The model folder defaults to the one bootstrap assembles
    (.cache/models/whisper-base, or $IVR_WHISPER_MODEL); when it is missing but the two wheels are
    installed it is assembled on first load (sha256 checked)."""

    name = "whisper"

    def __init__(self, model_dir: Path | str | None = None, *, language: str = "ru", beam_size: int = 5,
                 compute_type: str = "int8", cpu_threads: int = 0, num_workers: int = 1,
                 word_timestamps: bool = False, assemble: bool = True):
        self.model_dir = Path(model_dir) if model_dir else whisper_base_dir()
        self.language = language
        self.beam_size = beam_size
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.num_workers = num_workers  # CTranslate2 replicas: set to the pool's max_workers
        self.word_timestamps = word_timestamps
        self.assemble = assemble
        self._model = None
        self._lock = threading.Lock()
        self.load_s: float | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            t0 = time.monotonic()
            try:
                from faster_whisper import WhisperModel
            except ImportError:
                raise AsrUnavailable("faster-whisper not installed (pip install faster-whisper==1.2.1; "
                                     "scripts/bootstrap.sh does)") from None
            if not (self.model_dir / "model.bin").is_file():
                if self.assemble and self.model_dir == whisper_base_dir() and not whisper_base_ready(self.model_dir):
                    try:
                        assemble_whisper_base(self.model_dir)
                    except ModelNotInstalled as e:
                        raise AsrUnavailable(str(e)) from None
                else:
                    raise AsrUnavailable(f"no Whisper model in {self.model_dir} (python -m ivr.speech.models)")
            try:
                self._model = WhisperModel(str(self.model_dir), device="cpu", compute_type=self.compute_type,
                                           cpu_threads=self.cpu_threads, num_workers=self.num_workers,
                                           local_files_only=True)
            except Exception as e:  # CTranslate2 raises RuntimeError / ValueError on bad files
                raise AsrUnavailable(f"cannot load Whisper model from {self.model_dir}: {e}") from e
            self.load_s = time.monotonic() - t0
            log.info("Whisper model %s loaded in %.2f s", self.model_dir, self.load_s)

    def recognize(self, pcm: bytes, sample_rate: int) -> Transcript:
        self.load()
        x = pcm_to_float(pcm)
        duration = x.size / sample_rate
        t0 = time.monotonic()
        audio = resample(x, sample_rate, WHISPER_RATE)
        try:
            segments, info = self._model.transcribe(
                audio, language=self.language, task="transcribe", beam_size=self.beam_size,
                temperature=0.0,                  # one pass, no fallback temperatures
                initial_prompt=None, condition_on_previous_text=False,
                vad_filter=False,                 # the utterance comes cut by our VAD
                word_timestamps=self.word_timestamps, without_timestamps=not self.word_timestamps)
            segs = list(segments)                 # decoding happens while iterating
        except Exception as e:
            raise AsrError(f"Whisper failed on {duration:.2f} s of audio: {e}") from e
        words = tuple(Word(w.word.strip(), w.start, w.end, w.probability)
                      for s in segs for w in (s.words or ()))
        return Transcript(
            text=" ".join(s.text.strip() for s in segs if s.text.strip()),
            language=info.language, duration_s=duration, elapsed_s=time.monotonic() - t0, engine=self.name,
            segments=tuple(Segment(s.text.strip(), s.start, s.end, s.avg_logprob, s.no_speech_prob) for s in segs),
            words=words)


# --- Vosk --------------------------------------------------------------------------------------

class VoskEngine:
    """Vosk (Kaldi) with a model folder the user supplies (no Russian model is on PyPI).

    With a ``grammar`` (list of phrases, e.g. ["да", "нет", "удобно", "[unk]"]) recognition is
    restricted to those phrases (``KaldiRecognizer(model, rate, json.dumps(grammar))``; needs a
    model with a dynamic graph, i.e. the small models with HCLr.fst/Gr.fst). Audio is streamed
    through ``AcceptWaveform`` in ``chunk_ms`` pieces, as it would arrive from RTP."""

    name = "vosk"

    def __init__(self, model_dir: Path | str, *, grammar: Sequence[str] | None = None, language: str = "ru",
                 chunk_ms: int = 200, words: bool = True):
        self.model_dir = Path(model_dir)
        self.grammar = list(grammar) if grammar else None
        self.language = language
        self.chunk_ms = chunk_ms
        self.words = words
        self._model = None
        self._lock = threading.Lock()
        self.load_s: float | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            t0 = time.monotonic()
            try:
                import vosk
            except ImportError:
                raise AsrUnavailable("vosk not installed (pip install vosk==0.3.45)") from None
            if not (self.model_dir / "am" / "final.mdl").is_file() and not (self.model_dir / "final.mdl").is_file():
                raise AsrUnavailable(f"{self.model_dir} is not a Vosk model folder (no am/final.mdl)")
            vosk.SetLogLevel(-1)
            try:
                self._model = vosk.Model(model_path=str(self.model_dir))
            except Exception as e:  # vosk raises a bare Exception("Failed to create a model")
                raise AsrUnavailable(f"cannot load Vosk model from {self.model_dir}: {e}") from e
            self.load_s = time.monotonic() - t0
            log.info("Vosk model %s loaded in %.2f s", self.model_dir, self.load_s)

    def with_grammar(self, grammar: Sequence[str] | None) -> "VoskEngine":
        """The same loaded model with another grammar (e.g. one per dialog question, each in its
        own AsrPool); the model is loaded once and shared."""
        self.load()
        other = VoskEngine(self.model_dir, grammar=grammar, language=self.language, chunk_ms=self.chunk_ms,
                           words=self.words)
        other._model, other.load_s = self._model, 0.0
        return other

    def recognizer(self, sample_rate: int, grammar: Sequence[str] | None = None):
        """A fresh ``KaldiRecognizer`` (one per utterance; the model is shared)."""
        import vosk
        self.load()
        grammar = list(grammar) if grammar is not None else self.grammar
        if grammar:
            rec = vosk.KaldiRecognizer(self._model, float(sample_rate), json.dumps(grammar, ensure_ascii=False))
        else:
            rec = vosk.KaldiRecognizer(self._model, float(sample_rate))
        rec.SetWords(self.words)
        return rec

    def recognize(self, pcm: bytes, sample_rate: int, grammar: Sequence[str] | None = None) -> Transcript:
        rec = self.recognizer(sample_rate, grammar)
        duration = len(pcm) / (2 * sample_rate)
        t0 = time.monotonic()
        step = max(2, 2 * sample_rate * self.chunk_ms // 1000)
        results = []
        try:
            for i in range(0, len(pcm), step):
                if rec.AcceptWaveform(pcm[i:i + step]):
                    results.append(json.loads(rec.Result()))
            results.append(json.loads(rec.FinalResult()))
        except Exception as e:
            raise AsrError(f"Vosk failed on {duration:.2f} s of audio: {e}") from e
        texts = [r.get("text", "").strip() for r in results]
        words = tuple(Word(w["word"], w["start"], w["end"], w.get("conf", 1.0))
                      for r in results for w in r.get("result", ()))
        return Transcript(text=" ".join(t for t in texts if t), language=self.language, duration_s=duration,
                          elapsed_s=time.monotonic() - t0, engine=self.name,
                          segments=tuple(Segment(t, 0.0, duration) for t in texts if t), words=words)


# --- pool --------------------------------------------------------------------------------------

class AsrPool:
    """Async :class:`Recognizer` over a blocking engine: at most ``max_workers`` recognitions in
    threads, at most ``max_queue`` more waiting; beyond that :class:`AsrOverloaded`.

    Threads, not processes: CTranslate2 (Whisper) and Kaldi (Vosk) decode with the GIL released,
    the model is loaded once and shared, and the measured loop lag while decoding stays in the
    low milliseconds (docs/asr.md). On a 2-core machine ``max_workers=1`` with CTranslate2 using
    both cores gives the lowest latency per answer; more workers add throughput, not speed."""

    def __init__(self, engine: SyncEngine, *, max_workers: int = 1, max_queue: int = 4,
                 timeout_s: float | None = 30.0):
        if max_workers < 1 or max_queue < 0:
            raise ValueError("max_workers >= 1 and max_queue >= 0")
        self.engine = engine
        self.name = engine.name
        self.max_workers = max_workers
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"asr-{engine.name}")
        self._inflight = 0
        self.completed = 0
        self.refused = 0
        self.failures = 0

    @property
    def inflight(self) -> int:
        return self._inflight

    async def load(self) -> None:
        """Load the model in a worker (call at start-up so the first answer is not slow)."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self.engine.load)

    async def transcribe(self, pcm: bytes, sample_rate: int) -> Transcript:
        if sample_rate not in (8000, 16000):
            raise ValueError(f"unsupported sample rate {sample_rate}")
        if self._inflight >= self.max_workers + self.max_queue:
            self.refused += 1
            raise AsrOverloaded(f"ASR overloaded: {self._inflight} recognitions running or waiting "
                                f"(limit {self.max_workers} + {self.max_queue} queued)")
        self._inflight += 1
        submitted = time.monotonic()
        started: list[float] = []

        def job() -> Transcript:
            started.append(time.monotonic())
            return self.engine.recognize(pcm, sample_rate)

        try:
            fut = asyncio.get_running_loop().run_in_executor(self._executor, job)
        except BaseException:
            self._inflight -= 1
            raise

        def done(f: asyncio.Future) -> None:
            # Counted until the worker really finishes, even when the caller gave up (timeout,
            # hang-up): a recognition still running occupies a worker.
            self._inflight -= 1
            if not f.cancelled():
                f.exception()  # consumed: no "exception never retrieved" for abandoned jobs

        fut.add_done_callback(done)
        try:
            t = await asyncio.wait_for(asyncio.shield(fut), self.timeout_s)
        except asyncio.TimeoutError:
            self.failures += 1
            raise AsrError(f"ASR took longer than {self.timeout_s:.0f} s") from None
        except AsrError:
            self.failures += 1
            raise
        self.completed += 1
        queued = (started[0] - submitted) if started else 0.0
        return Transcript(t.text, t.language, t.duration_s, t.elapsed_s, t.engine, t.segments, t.words,
                          queued_s=queued)

    def stats(self) -> dict:
        return {"engine": self.name, "inflight": self._inflight, "completed": self.completed,
                "refused": self.refused, "failures": self.failures}

    def close(self, wait: bool = True) -> None:
        self._executor.shutdown(wait=wait, cancel_futures=True)


def default_recognizer(model_dir: Path | str | None = None, *, max_workers: int = 1, max_queue: int = 4) -> AsrPool:
    """Whisper base (int8, CPU) in a one-worker pool."""
    return AsrPool(WhisperEngine(model_dir, num_workers=max_workers), max_workers=max_workers, max_queue=max_queue)


# --- command line: transcribe files, measure the pool ------------------------------------------

_proc_engine: WhisperEngine | None = None


def _proc_init(model_dir: str | None, cpu_threads: int) -> None:
    global _proc_engine
    _proc_engine = WhisperEngine(model_dir, cpu_threads=cpu_threads)
    _proc_engine.load()


def _proc_recognize(pcm: bytes, sample_rate: int) -> Transcript:
    return _proc_engine.recognize(pcm, sample_rate)


def read_wav(path: Path | str) -> tuple[bytes, int]:
    import wave
    with wave.open(str(path)) as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: mono 16-bit WAV expected")
        return w.readframes(w.getnframes()), w.getframerate()


async def _bench(files: list[str], mode: str, workers: int, rounds: int, cpu_threads: int) -> None:
    """Decode every file ``rounds`` times, all submitted at once, while a 5 ms ticker measures
    the event loop's lag: threads (AsrPool) or processes (one model per process)."""
    audio = [read_wav(f) for f in files]
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    if mode == "threads":
        pool = AsrPool(WhisperEngine(cpu_threads=cpu_threads, num_workers=workers), max_workers=workers,
                       max_queue=10_000,
                       timeout_s=None)
        await pool.load()
        submit = lambda pcm, rate: pool.transcribe(pcm, rate)  # noqa: E731
        close = pool.close
    else:
        from concurrent.futures import ProcessPoolExecutor
        import multiprocessing
        ex = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_proc_init, initargs=(None, cpu_threads))
        await asyncio.gather(*(loop.run_in_executor(ex, time.sleep, 0.2) for _ in range(workers)))
        submit = lambda pcm, rate: loop.run_in_executor(ex, _proc_recognize, pcm, rate)  # noqa: E731
        close = ex.shutdown
    load_s = time.monotonic() - t0
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker():
        while not done.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - t - 0.005)

    tick = asyncio.create_task(ticker())
    t1 = time.monotonic()
    results = await asyncio.gather(*(submit(pcm, rate) for _ in range(rounds) for pcm, rate in audio))
    wall = time.monotonic() - t1
    done.set()
    await tick
    close()
    audio_s = sum(r.duration_s for r in results)
    lags.sort()
    print(f"{mode}: workers={workers} cpu_threads={cpu_threads} load {load_s:.2f} s; {len(results)} decodes of "
          f"{audio_s:.1f} s audio in {wall:.2f} s wall (throughput RTF {wall / audio_s:.2f}); "
          f"per decode {min(r.elapsed_s for r in results):.2f}-{max(r.elapsed_s for r in results):.2f} s; "
          f"loop lag p50 {lags[len(lags) // 2] * 1000:.1f} ms, max {lags[-1] * 1000:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys
    p = argparse.ArgumentParser(prog="python -m ivr.speech.asr",
                                description="Transcribe mono 16-bit WAV files (8 or 16 kHz) with Whisper base, "
                                            "or measure the worker pool (--bench).")
    p.add_argument("files", nargs="+")
    p.add_argument("--engine", choices=["whisper", "vosk"], default="whisper")
    p.add_argument("--model", help="model folder (Vosk: required)")
    p.add_argument("--grammar", help="Vosk: comma-separated phrases")
    p.add_argument("--bench", choices=["threads", "processes"])
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--cpu-threads", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.bench:
        asyncio.run(_bench(args.files, args.bench, args.workers, args.rounds, args.cpu_threads))
        return 0
    if args.engine == "vosk":
        if not args.model:
            p.error("--model is required for vosk")
        engine: SyncEngine = VoskEngine(args.model, grammar=args.grammar.split(",") if args.grammar else None)
    else:
        engine = WhisperEngine(args.model, cpu_threads=args.cpu_threads)
    try:
        engine.load()
        for f in args.files:
            pcm, rate = read_wav(f)
            t = engine.recognize(pcm, rate)
            print(f"{f}\t{t.text}\t{t.duration_s:.2f} s audio, {t.elapsed_s:.2f} s, RTF {t.rtf:.2f}")
    except AsrError as e:
        print(f"ivr.speech.asr: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
