"""Content-addressed cache of rendered prompts (raw signed 16-bit little-endian mono PCM).

A prompt is identified by ``(engine, voice, sample_rate, text)``; its file is named by the
sha256 of that tuple: ``<folder>/<hash[:2]>/<hash>.sln`` (8 kHz) or ``.sln16`` (16 kHz) -
Asterisk's own names for headerless signed-linear audio, so Asterisk plays the files as they are.

* Writes are atomic (temporary file in the same directory + ``os.replace``): a reader (Asterisk
  or another process) never sees a half-written prompt.
* ``get`` touches the file's mtime, so mtime is "last used" and eviction is least recently used.
* When the folder grows over ``max_bytes`` the least recently used files are removed, but never
  one used in the last ``protect_s`` seconds: a prompt that a call is playing right now stays.
  The folder may therefore exceed the limit for a while when everything in it is in use.
* Several processes may share one folder: the state is the folder itself (sizes and mtimes are
  re-read on eviction), the counters in ``stats()`` are per process.

How Asterisk reaches the files is described in docs/tts.md: ``sound_name(path)`` gives the
media name for ARI ``play`` / ``Playback`` (``sound:/abs/path/without/ext``), using
``asterisk_path`` when Asterisk sees the folder under another path (the chroot instance).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Asterisk's file extensions for raw signed-linear audio by sample rate (formats/format_sln.c).
SLN_EXTENSIONS = {
    8000: "sln", 12000: "sln12", 16000: "sln16", 24000: "sln24",
    32000: "sln32", 44100: "sln44", 48000: "sln48", 96000: "sln96", 192000: "sln192",
}
_TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class PromptKey:
    """What a rendered prompt depends on. ``text`` should already be normalised by the caller."""

    engine: str
    voice: str
    sample_rate: int
    text: str

    def __post_init__(self) -> None:
        if self.sample_rate not in SLN_EXTENSIONS:
            raise ValueError(f"unsupported sample rate {self.sample_rate}; one of {sorted(SLN_EXTENSIONS)}")

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        # Length-prefixed fields: ("a", "bc") and ("ab", "c") never collide.
        for part in (self.engine, self.voice, str(self.sample_rate), self.text):
            b = part.encode("utf-8")
            h.update(len(b).to_bytes(8, "big"))
            h.update(b)
        return h.hexdigest()

    @property
    def extension(self) -> str:
        return SLN_EXTENSIONS[self.sample_rate]


@dataclass(frozen=True)
class CacheStats:
    entries: int
    bytes: int
    max_bytes: int
    hits: int
    misses: int
    puts: int
    evictions: int


class PromptCache:
    def __init__(self, folder: Path | str, max_bytes: int, *, protect_s: float = 600.0,
                 asterisk_path: str | None = None, http_base: str | None = None):
        """``folder``: where the files live (created). ``max_bytes``: size limit of the folder.
        ``protect_s``: files used more recently than this are never evicted (a prompt lasts well
        under a minute; the margin covers calls queued behind it).
        ``asterisk_path``: the same folder as Asterisk sees it (e.g. ``/srv/ivr/main/tts`` inside
        the chroot); default: the absolute host path.
        ``http_base``: for an Asterisk on another host, the URL under which the controller serves
        this folder (e.g. ``http://10.0.0.5:8088/tts``); media names then are
        ``sound:<http_base>/<h[:2]>/<h>.sln`` for res_http_media_cache (docs/tts.md)."""
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.folder = Path(folder).absolute()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.protect_s = protect_s
        self.asterisk_path = (asterisk_path or str(self.folder)).rstrip("/")
        self.http_base = http_base.rstrip("/") if http_base else None
        self._lock = threading.Lock()
        self._hits = self._misses = self._puts = self._evictions = 0
        self._clean_stale_tmp()
        self._bytes = sum(size for _, size, _ in self._scan())

    # --- naming ------------------------------------------------------------------------------

    def path_for(self, key: PromptKey) -> Path:
        d = key.digest
        return self.folder / d[:2] / f"{d}.{key.extension}"

    def sound_name(self, path: Path) -> str:
        """Media name for ARI ``play``/``Playback``: ``sound:<asterisk path without extension>``.
        Asterisk picks the format from the extension it finds (``.sln`` / ``.sln16``).
        With ``http_base`` the URL keeps the extension (res_http_media_cache needs it)."""
        rel = Path(path).relative_to(self.folder)
        if self.http_base:
            return f"sound:{self.http_base}/{rel.as_posix()}"
        stem = rel.with_suffix("").as_posix()
        return f"sound:{self.asterisk_path}/{stem}"

    # --- get / put ---------------------------------------------------------------------------

    def get(self, key: PromptKey) -> Path | None:
        path = self.path_for(key)
        try:
            os.utime(path)  # mark as recently used (LRU); fails when absent
        except FileNotFoundError:
            with self._lock:
                self._misses += 1
            return None
        with self._lock:
            self._hits += 1
        return path

    def put(self, key: PromptKey, pcm: bytes) -> Path:
        if not pcm:
            raise ValueError("refusing to cache empty audio")
        if len(pcm) % 2:
            raise ValueError("signed 16-bit PCM must have an even number of bytes")
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            old = path.stat().st_size
        except FileNotFoundError:
            old = 0
        tmp = path.parent / f"{_TMP_PREFIX}{path.name}.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            with open(tmp, "wb") as f:
                f.write(pcm)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # atomic on one filesystem: readers see old or new, never half
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        with self._lock:
            self._puts += 1
            self._bytes += len(pcm) - old
            over = self._bytes > self.max_bytes
        if over:
            self.evict()
        return path

    # --- eviction ----------------------------------------------------------------------------

    def _scan(self) -> list[tuple[Path, int, float]]:
        out = []
        for sub in self.folder.iterdir():
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for p in sub.iterdir():
                if p.name.startswith("."):
                    continue
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                out.append((p, st.st_size, st.st_mtime))
        return out

    def _clean_stale_tmp(self, older_than_s: float = 3600.0) -> None:
        now = time.time()
        for tmp in self.folder.glob(f"??/{_TMP_PREFIX}*"):
            try:
                if now - tmp.stat().st_mtime > older_than_s:
                    tmp.unlink()
            except FileNotFoundError:
                pass

    def evict(self) -> int:
        """Remove least recently used files until the folder fits ``max_bytes``, sparing files
        used in the last ``protect_s`` seconds. Returns the number of files removed."""
        with self._lock:
            files = self._scan()
            total = sum(size for _, size, _ in files)
            removed = 0
            cutoff = time.time() - self.protect_s
            for path, size, mtime in sorted(files, key=lambda f: f[2]):
                if total <= self.max_bytes:
                    break
                if mtime > cutoff:
                    break  # sorted by mtime: everything after is more recent still
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                total -= size
                removed += 1
            self._bytes = total
            self._evictions += removed
        if removed:
            log.info("prompt cache %s: evicted %d file(s), %d bytes now (limit %d)",
                     self.folder, removed, total, self.max_bytes)
        if total > self.max_bytes:
            log.warning("prompt cache %s over its limit (%d > %d bytes): the rest was used in the "
                        "last %.0f s", self.folder, total, self.max_bytes, self.protect_s)
        return removed

    def stats(self) -> CacheStats:
        files = self._scan()
        with self._lock:
            self._bytes = sum(size for _, size, _ in files)
            return CacheStats(entries=len(files), bytes=self._bytes, max_bytes=self.max_bytes,
                              hits=self._hits, misses=self._misses, puts=self._puts,
                              evictions=self._evictions)
