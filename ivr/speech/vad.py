"""End of speech detection with Silero VAD (ONNX, run by onnxruntime; no torch).

Streaming API for the call's audio as it arrives (RTP frames of slin / slin16)::

    det = EndOfSpeechDetector(sample_rate=8000)          # one per utterance being listened to
    for frame in rtp_frames:                             # any length: 20 ms, 32 ms, a whole file
        for ev in det.feed(frame):
            if isinstance(ev, SpeechStarted): stop the prompt (barge-in)
            elif isinstance(ev, SpeechEnded): asr.transcribe(ev.utterance.pcm, 8000)
            elif isinstance(ev, NoSpeech): no answer: repeat / DTMF menu

The model scores 32 ms windows (256 samples at 8 kHz, 512 at 16 kHz); the detector keeps the
model state between windows, so frames of any size can be fed. One window costs ~0.3 ms of CPU
here when idle, ~1 ms with the machine loaded, so ``feed`` can run on the event loop for 20 ms
RTP frames of a handful of calls; beyond that run it in a thread (docs/asr.md has figures).
The ONNX session is loaded once per process and shared by all detectors (onnxruntime sessions are
thread-safe); each detector has its own recurrent state.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .models import ModelNotInstalled, silero_vad_onnx

SUPPORTED_RATES = (8000, 16000)


class VadError(RuntimeError):
    pass


# --- the model ---------------------------------------------------------------------------------

_sessions: dict[str, object] = {}
_sessions_lock = threading.Lock()


def load_session(path: Path | str | None = None):
    """The onnxruntime session for the Silero VAD model (cached per path, one thread each:
    the model is tiny, and threads would only contend with Whisper on a 2-core machine)."""
    path = str(path or silero_vad_onnx())
    with _sessions_lock:
        sess = _sessions.get(path)
        if sess is None:
            try:
                import onnxruntime
            except ImportError:
                raise ModelNotInstalled("onnxruntime not installed (pip install onnxruntime; "
                                        "scripts/bootstrap.sh does)") from None
            opts = onnxruntime.SessionOptions()
            opts.inter_op_num_threads = 1
            opts.intra_op_num_threads = 1
            opts.log_severity_level = 3
            sess = onnxruntime.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
            _sessions[path] = sess
        return sess


class SileroVad:
    """Speech probability of consecutive 32 ms windows (the recurrent state carries over)."""

    def __init__(self, sample_rate: int = 8000, *, model_path: Path | str | None = None):
        if sample_rate not in SUPPORTED_RATES:
            raise ValueError(f"Silero VAD works at 8000 or 16000 Hz, not {sample_rate}")
        self.sample_rate = sample_rate
        self.window = 256 if sample_rate == 8000 else 512
        self._context_size = 32 if sample_rate == 8000 else 64
        self._session = load_session(model_path)
        self._sr = np.array(sample_rate, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, self._context_size), dtype=np.float32)

    def __call__(self, window: np.ndarray) -> float:
        """``window``: float32 samples in [-1, 1], exactly ``self.window`` of them."""
        if window.shape[-1] != self.window:
            raise ValueError(f"window of {window.shape[-1]} samples; {self.window} expected")
        x = np.concatenate([self._context, window.reshape(1, -1).astype(np.float32, copy=False)], axis=1)
        out, self._state = self._session.run(None, {"input": x, "state": self._state, "sr": self._sr})
        self._context = x[:, -self._context_size:]
        return float(out[0][0])


# --- events ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Utterance:
    pcm: bytes            # s16le mono at sample_rate, with up to pad_ms before and after the speech
    sample_rate: int
    start_s: float        # speech start / end, seconds since the detector's first sample
    end_s: float
    reason: str           # "silence" (end of speech) or "max_length"

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / (2 * self.sample_rate)


@dataclass(frozen=True)
class SpeechStarted:
    at_s: float           # start of the first speech window (barge-in: stop the prompt now)


@dataclass(frozen=True)
class SpeechEnded:
    at_s: float           # when the end was decided (after the trailing silence)
    utterance: Utterance


@dataclass(frozen=True)
class NoSpeech:
    at_s: float           # no speech started within no_speech_timeout_s


class EndOfSpeechDetector:
    """Listens for one utterance: speech start, then end after ``end_silence_ms`` of silence.

    * speech starts after ``min_speech_ms`` of consecutive windows with probability >=
      ``threshold`` (short clicks are ignored);
    * during speech a window below ``neg_threshold`` (default threshold - 0.15) counts as
      silence; one at or above ``threshold`` resets the count; in between (hysteresis) the count
      goes on only once started;
    * ``end_silence_ms`` of silence -> :class:`SpeechEnded` (reason "silence");
      ``max_utterance_s`` of speech -> :class:`SpeechEnded` (reason "max_length");
      ``no_speech_timeout_s`` without a start -> :class:`NoSpeech`;
    * after SpeechEnded / NoSpeech the detector is ``done`` and ignores further audio until
      :meth:`reset`.

    The utterance PCM runs from ``pad_ms`` before the start to ``pad_ms`` after the last speech
    window (the trailing silence beyond the padding is not included)."""

    def __init__(self, sample_rate: int = 8000, *, threshold: float = 0.5, neg_threshold: float | None = None,
                 min_speech_ms: int = 96, end_silence_ms: int = 500, no_speech_timeout_s: float | None = 5.0,
                 max_utterance_s: float = 15.0, pad_ms: int = 200, model_path: Path | str | None = None):
        self.vad = SileroVad(sample_rate, model_path=model_path)
        self.sample_rate = sample_rate
        self.threshold = threshold
        self.neg_threshold = max(0.01, threshold - 0.15) if neg_threshold is None else neg_threshold
        self.window = self.vad.window
        self.window_s = self.window / sample_rate
        self.min_speech_windows = max(1, round(min_speech_ms / 1000 / self.window_s))
        self.end_silence_windows = max(1, round(end_silence_ms / 1000 / self.window_s))
        self.no_speech_timeout_s = no_speech_timeout_s
        self.max_utterance_s = max_utterance_s
        self.pad_windows = max(0, round(pad_ms / 1000 / self.window_s))
        self.reset()

    def reset(self) -> None:
        self.vad.reset()
        self._pending = b""
        self._n = 0                       # windows scored
        self._pre: deque[bytes] = deque(maxlen=self.pad_windows + self.min_speech_windows)
        self._run = 0                     # consecutive speech windows before the start
        self._speech: list[bytes] | None = None  # windows since start (incl. leading padding)
        self._start_window = 0
        self._last_speech_len = 0         # len(self._speech) after the last speech window
        self._silence = 0
        self.done = False
        # per window, for diagnostics and tests; bounded (~5 min) for detectors that listen all call long
        self.probabilities: deque[float] = deque(maxlen=10_000)

    @property
    def in_speech(self) -> bool:
        return self._speech is not None and not self.done

    @property
    def position_s(self) -> float:
        return self._n * self.window_s

    def feed(self, frame: bytes) -> list:
        """Push s16le mono audio; returns the events it caused (usually none)."""
        if self.done or not frame:
            return []
        data = self._pending + frame
        whole = len(data) - len(data) % (2 * self.window)
        self._pending = data[whole:]
        events: list = []
        if not whole:
            return events
        samples = np.frombuffer(data[:whole], dtype="<i2").astype(np.float32) / 32768.0
        for i in range(whole // (2 * self.window)):
            raw = data[i * 2 * self.window:(i + 1) * 2 * self.window]
            ev = self._step(raw, samples[i * self.window:(i + 1) * self.window])
            if ev is not None:
                events.append(ev)
                if self.done:
                    break
        return events

    def _step(self, raw: bytes, window: np.ndarray):
        p = self.vad(window)
        self.probabilities.append(p)
        self._n += 1
        now = self._n * self.window_s
        if self._speech is None:
            self._pre.append(raw)
            self._run = self._run + 1 if p >= self.threshold else 0
            if self._run >= self.min_speech_windows:
                self._start_window = self._n - self._run
                self._speech = list(self._pre)  # padding + the speech windows so far
                self._last_speech_len = len(self._speech)
                self._silence = 0
                return SpeechStarted(at_s=self._start_window * self.window_s)
            if self.no_speech_timeout_s is not None and now >= self.no_speech_timeout_s:
                self.done = True
                return NoSpeech(at_s=now)
            return None
        self._speech.append(raw)
        if p >= self.threshold:
            self._silence = 0
            self._last_speech_len = len(self._speech)
        elif p < self.neg_threshold or self._silence:
            self._silence += 1
        if self._silence >= self.end_silence_windows:
            return self._finish(now, "silence")
        if now - self._start_window * self.window_s >= self.max_utterance_s:
            self._last_speech_len = len(self._speech)
            return self._finish(now, "max_length")
        return None

    def _finish(self, now: float, reason: str) -> SpeechEnded:
        self.done = True
        keep = min(len(self._speech), self._last_speech_len + self.pad_windows)
        pcm = b"".join(self._speech[:keep])
        end_window = self._n - (len(self._speech) - self._last_speech_len)
        utt = Utterance(pcm=pcm, sample_rate=self.sample_rate, start_s=self._start_window * self.window_s,
                        end_s=end_window * self.window_s, reason=reason)
        self._speech = None
        return SpeechEnded(at_s=now, utterance=utt)


def speech_probabilities(pcm: bytes, sample_rate: int = 8000) -> list[float]:
    """Per-window speech probability of a whole recording (diagnostics, benchmarks)."""
    vad = SileroVad(sample_rate)
    a = np.frombuffer(pcm[:len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float32) / 32768.0
    return [vad(a[i:i + vad.window]) for i in range(0, len(a) - vad.window + 1, vad.window)]
