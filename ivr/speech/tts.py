"""Text-to-speech for telephone prompts: Festival + festvox-ru by default, espeak-ng as fallback.

Engines turn text into raw signed 16-bit little-endian mono PCM ("slin") at the telephone rate
(8 kHz, or 16 kHz for wideband). ``Synthesizer.prompt(text)`` returns a file in the
content-addressed ``PromptCache`` that Asterisk plays as is (``PromptAudio.sound``):

* a cache hit spawns nothing;
* otherwise the engines are tried in order (a failure is logged and the next one is used);
* at most ``max_workers`` synthesis processes run at once (asyncio subprocesses behind a
  semaphore - the event loop never blocks);
* two concurrent requests for the same text synthesize once (per-text lock);
* text longer than ``max_chars`` is refused (``TextTooLong``).

Render prompts before dialing (``Synthesizer.prepare``) so the client hears the prompt the
moment he answers. See docs/tts.md.
"""

from __future__ import annotations

import array
import asyncio
import io
import logging
import os
import re
import shutil
import struct
import sys
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol, runtime_checkable

from .cache import SLN_EXTENSIONS, PromptCache, PromptKey

log = logging.getLogger(__name__)

DEFAULT_MAX_CHARS = 2000


class TtsError(RuntimeError):
    """Synthesis failed (bad output, timeout, engine error)."""


class TtsUnavailable(TtsError):
    """The engine's program is not installed."""


class TextTooLong(ValueError):
    pass


@runtime_checkable
class TtsEngine(Protocol):
    name: str
    voice: str

    async def synthesize(self, text: str, sample_rate: int) -> bytes:
        """Raw signed 16-bit little-endian mono PCM at ``sample_rate``."""
        ...


def normalize_text(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# --- audio helpers -----------------------------------------------------------------------------

def wav_to_pcm(data: bytes) -> tuple[bytes, int, int, int]:
    """(frames, rate, channels, sample width) of a PCM WAV. Tolerates the bogus sizes that
    streaming writers (``espeak-ng --stdout``) put in the header: the data runs to the end."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise TtsError(f"not a WAV file ({len(data)} bytes, starts {data[:12]!r})")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = pos + 8
        if cid == b"fmt ":
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[body:body + 16])
            if tag not in (1, 0xFFFE):
                raise TtsError(f"WAV format tag {tag} is not PCM")
            fmt = (rate, channels, bits // 8)
        elif cid == b"data":
            if fmt is None:
                raise TtsError("WAV data chunk before fmt chunk")
            frames = data[body:min(body + size, len(data))]
            rate, channels, width = fmt
            frames = frames[:len(frames) - len(frames) % (channels * width)]
            return frames, rate, channels, width
        pos = body + size + (size & 1)
    # Well-formed files the manual parser did not handle: let the wave module try.
    try:
        with wave.open(io.BytesIO(data)) as w:
            return w.readframes(w.getnframes()), w.getframerate(), w.getnchannels(), w.getsampwidth()
    except (wave.Error, EOFError) as e:
        raise TtsError(f"unreadable WAV: {e}") from None


def resample_linear(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Pure-Python linear-interpolation resampler for s16le mono (used when sox is missing).
    No anti-aliasing filter: adequate for speech going down to 8 kHz, sox is better."""
    if src_rate == dst_rate or not pcm:
        return pcm
    src = array.array("h")
    src.frombytes(pcm)
    if sys.byteorder == "big":
        src.byteswap()
    n_out = max(1, int(len(src) * dst_rate / src_rate))
    step = src_rate / dst_rate
    last = len(src) - 1
    out = array.array("h", bytes(2 * n_out))
    for i in range(n_out):
        x = i * step
        j = int(x)
        if j >= last:
            out[i] = src[last]
        else:
            f = x - j
            out[i] = int(src[j] + (src[j + 1] - src[j]) * f)
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def _to_mono16(frames: bytes, channels: int, width: int) -> bytes:
    if width != 2:
        raise TtsError(f"{8 * width}-bit WAV: only 16-bit is supported without sox")
    if channels == 1:
        return frames
    a = array.array("h")
    a.frombytes(frames)
    mono = array.array("h", (sum(a[i:i + channels]) // channels for i in range(0, len(a), channels)))
    return mono.tobytes()


class _Runner:
    """Spawns the engine programs (asyncio subprocesses) and counts the spawns (tests, stats)."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.spawns = 0

    async def run(self, argv: list[str], stdin: bytes | None = None) -> tuple[bytes, bytes]:
        self.spawns += 1
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except FileNotFoundError:
            raise TtsUnavailable(f"{argv[0]} not found") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), self.timeout_s)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise TtsError(f"{os.path.basename(argv[0])} timed out after {self.timeout_s:.0f} s") from None
        except asyncio.CancelledError:
            proc.kill()  # no orphan synthesis process; the cancellation goes on
            try:
                await asyncio.wait_for(proc.communicate(), 5)  # reap it and close its pipes
            except (asyncio.TimeoutError, asyncio.CancelledError, OSError):
                pass
            raise
        if proc.returncode != 0:
            raise TtsError(f"{os.path.basename(argv[0])} exited {proc.returncode}: "
                           f"{err.decode('utf-8', 'replace').strip()[-500:]}")
        return out, err


async def _wav_to_slin(runner: _Runner, wav: bytes, sample_rate: int, sox: str | None) -> bytes:
    frames, rate, channels, width = wav_to_pcm(wav)
    if not frames:
        raise TtsError("the engine produced no audio")
    if rate == sample_rate and channels == 1 and width == 2:
        return frames
    if sox:
        enc = ["-e", "signed-integer"] if width > 1 else ["-e", "unsigned-integer"]
        out, _ = await runner.run(
            [sox, "-q", "-t", "raw", "-r", str(rate), *enc, "-b", str(8 * width), "-c", str(channels),
             "-L", "-", "-t", "raw", "-r", str(sample_rate), "-e", "signed-integer", "-b", "16",
             "-c", "1", "-L", "-"], stdin=frames)
        return out[:len(out) - len(out) % 2]
    return resample_linear(_to_mono16(frames, channels, width), rate, sample_rate)


def _find(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if not path:
        raise TtsUnavailable(f"{binary} not found: install the Debian package {package} "
                             f"(apt-get install {package}; scripts/bootstrap.sh does)")
    return path


# --- engines -----------------------------------------------------------------------------------

class FestivalEngine:
    """Festival's ``text2wave`` with the Russian voice from festvox-ru (msu_ru_nsh_clunits).
    Asks text2wave for the wanted rate (-F); converts only if the WAV comes out otherwise."""

    name = "festival"

    def __init__(self, voice: str = "msu_ru_nsh_clunits", *, binary: str = "text2wave",
                 sox: str | None = "sox", timeout_s: float = 60.0):
        if not re.fullmatch(r"[A-Za-z0-9_]+", voice):
            raise ValueError(f"bad Festival voice name {voice!r}")
        self.voice = voice
        self.binary = binary
        self.sox = sox
        self._runner = _Runner(timeout_s)

    @property
    def spawns(self) -> int:
        return self._runner.spawns

    async def synthesize(self, text: str, sample_rate: int) -> bytes:
        exe = _find(self.binary, "festival festvox-ru")
        sox = shutil.which(self.sox) if self.sox else None
        with tempfile.TemporaryDirectory(prefix="ivr-tts-") as tmp:
            src, dst = Path(tmp) / "in.txt", Path(tmp) / "out.wav"
            src.write_text(text + "\n", encoding="utf-8")
            _, err = await self._runner.run(
                [exe, "-F", str(sample_rate), "-eval", f"(voice_{self.voice})", str(src), "-o", str(dst)])
            # text2wave exits 0 on Scheme errors (e.g. a voice that is not installed).
            msg = err.decode("utf-8", "replace")
            if "SIOD ERROR" in msg or not dst.exists() or dst.stat().st_size <= 44:
                if f"voice_{self.voice}" in msg:
                    raise TtsUnavailable(f"Festival voice {self.voice} not installed (Debian package festvox-ru)")
                raise TtsError(f"text2wave produced no audio: {msg.strip()[-500:]}")
            wav = dst.read_bytes()
        return await _wav_to_slin(self._runner, wav, sample_rate, sox)


class EspeakEngine:
    """espeak-ng (rule-based, robotic but instant). Writes 22050 Hz WAV to stdout; resampled with
    sox, or in pure Python when sox is missing."""

    name = "espeak-ng"

    def __init__(self, voice: str = "ru", *, binary: str = "espeak-ng", sox: str | None = "sox",
                 speed_wpm: int = 150, timeout_s: float = 30.0):
        self.voice = voice
        self.binary = binary
        self.sox = sox
        self.speed_wpm = speed_wpm
        self._runner = _Runner(timeout_s)

    @property
    def spawns(self) -> int:
        return self._runner.spawns

    async def synthesize(self, text: str, sample_rate: int) -> bytes:
        exe = _find(self.binary, "espeak-ng")
        sox = shutil.which(self.sox) if self.sox else None
        # Text on stdin: never parsed as options, no length limit of the command line.
        wav, _ = await self._runner.run(
            [exe, "-v", self.voice, "-s", str(self.speed_wpm), "--stdin", "--stdout"],
            stdin=text.encode("utf-8"))
        return await _wav_to_slin(self._runner, wav, sample_rate, sox)


def trim_leading_silence(pcm: bytes, sample_rate: int, level: int = 500, keep_ms: int = 20) -> bytes:
    """Drop the silence engines put before the first word (Festival: 86-312 ms, measured), keeping
    ``keep_ms``: the client hears the first word that much sooner after he answers."""
    samples = array.array("h")
    samples.frombytes(pcm[:len(pcm) - len(pcm) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    onset = next((i for i, x in enumerate(samples) if abs(x) > level), None)
    return pcm if onset is None else pcm[2 * max(0, onset - sample_rate * keep_ms // 1000):]


# --- synthesizer -------------------------------------------------------------------------------

@dataclass(frozen=True)
class PromptAudio:
    path: Path
    engine: str
    duration_s: float
    cached: bool
    sound: str  # media name for ARI play / Playback, e.g. "sound:/srv/ivr/main/tts/ab/ab12..."


class Synthesizer:
    def __init__(self, engines: list[TtsEngine], cache: PromptCache, sample_rate: int = 8000, *,
                 max_workers: int = 2, max_chars: int = DEFAULT_MAX_CHARS,
                 unavailable_retry_s: float = 60.0):
        if not engines:
            raise ValueError("at least one TTS engine is needed")
        if sample_rate not in SLN_EXTENSIONS:
            raise ValueError(f"unsupported sample rate {sample_rate}")
        self.engines = list(engines)
        self.cache = cache
        self.sample_rate = sample_rate
        self.max_chars = max_chars
        self.unavailable_retry_s = unavailable_retry_s
        self._workers = asyncio.Semaphore(max_workers)
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._skip_until: dict[int, float] = {}  # engine index -> monotonic time (not installed)
        self.syntheses = 0
        self.failures = 0

    def _key(self, engine: TtsEngine, text: str) -> PromptKey:
        # "+trim": the audio is stored without the engine's leading silence (a new cache name,
        # so files rendered before trimming existed are never served as if trimmed)
        return PromptKey(engine.name, f"{engine.voice}+trim", self.sample_rate, text)

    def _audio(self, path: Path, engine: TtsEngine, cached: bool) -> PromptAudio:
        try:
            size = path.stat().st_size
        except FileNotFoundError:  # evicted by another process in between: rare, size unknown
            size = 0
        return PromptAudio(path=path, engine=engine.name, duration_s=size / (2 * self.sample_rate),
                           cached=cached, sound=self.cache.sound_name(path))

    async def prompt(self, text: str) -> PromptAudio:
        text = normalize_text(text)
        if not text:
            raise ValueError("empty prompt text")
        if len(text) > self.max_chars:
            raise TextTooLong(f"prompt text is {len(text)} characters; the limit is {self.max_chars}")
        # Fast path without locking: the primary engine's rendering is in the cache.
        path = self.cache.get(self._key(self.engines[0], text))
        if path:
            return self._audio(path, self.engines[0], cached=True)
        lock_id = text
        lock, users = self._locks.get(lock_id, (asyncio.Lock(), 0))
        self._locks[lock_id] = (lock, users + 1)
        try:
            async with lock:
                return await self._render(text)
        finally:
            lock, users = self._locks[lock_id]
            if users == 1:
                del self._locks[lock_id]
            else:
                self._locks[lock_id] = (lock, users - 1)

    async def _render(self, text: str) -> PromptAudio:
        errors = []
        for i, engine in enumerate(self.engines):
            key = self._key(engine, text)
            path = self.cache.get(key)  # also catches a render finished while we waited
            if path:
                return self._audio(path, engine, cached=True)
            if self._skip_until.get(i, 0) > time.monotonic():
                errors.append(f"{engine.name}: not installed")
                continue
            try:
                async with self._workers:
                    pcm = trim_leading_silence(await engine.synthesize(text, self.sample_rate), self.sample_rate)
                if len(pcm) < 2 * self.sample_rate // 10:
                    raise TtsError(f"only {len(pcm)} bytes of audio")
            except TtsUnavailable as e:
                self._skip_until[i] = time.monotonic() + self.unavailable_retry_s
                self.failures += 1
                errors.append(f"{engine.name}: {e}")
                log.warning("TTS engine %s unavailable (%s); falling back", engine.name, e)
                continue
            except (TtsError, OSError) as e:
                self.failures += 1
                errors.append(f"{engine.name}: {e}")
                log.warning("TTS engine %s failed on %r (%s); falling back", engine.name, text[:60], e)
                continue
            self.syntheses += 1
            path = await asyncio.to_thread(self.cache.put, key, pcm)
            return self._audio(path, engine, cached=False)
        raise TtsError("no TTS engine could render the prompt: " + "; ".join(errors))

    async def prepare(self, texts: Iterable[str]) -> list[PromptAudio]:
        """Render several prompts (before dialing); concurrency is bounded by ``max_workers``."""
        return list(await asyncio.gather(*(self.prompt(t) for t in texts)))


def default_synthesizer(cache_dir: Path | str, *, max_bytes: int = 512 * 1024 * 1024,
                        sample_rate: int = 8000, asterisk_path: str | None = None,
                        max_workers: int = 2) -> Synthesizer:
    """Festival (festvox-ru) first, espeak-ng as fallback, cache in ``cache_dir``."""
    cache = PromptCache(cache_dir, max_bytes, asterisk_path=asterisk_path)
    return Synthesizer([FestivalEngine(), EspeakEngine()], cache, sample_rate, max_workers=max_workers)
