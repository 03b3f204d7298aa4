"""PromptCache: content addressing, LRU eviction that spares recently used files, atomic writes,
stats, Asterisk media names. Pure file-system tests in tmp_path."""

import os
import time

import pytest

from ivr.speech import cache as cache_mod
from ivr.speech.cache import PromptCache, PromptKey


def key(text="Здравствуйте", engine="festival", voice="msu_ru_nsh_clunits", rate=8000):
    return PromptKey(engine, voice, rate, text)


def age(path, seconds):
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_content_addressing(tmp_path):
    c = PromptCache(tmp_path, 10_000_000)
    p = c.put(key(), b"\x01\x00" * 100)
    digest = key().digest
    assert p == tmp_path / digest[:2] / f"{digest}.sln"
    assert p.read_bytes() == b"\x01\x00" * 100
    assert c.get(key()) == p
    # Every part of the key matters.
    others = [key(text="Здравствуйте!"), key(engine="espeak-ng"), key(voice="ru"), key(rate=16000)]
    assert len({k.digest for k in others} | {digest}) == 5
    for k in others:
        assert c.get(k) is None
    assert c.path_for(key(rate=16000)).suffix == ".sln16"
    # Length-prefixed hashing: shifting characters between fields changes the digest.
    assert PromptKey("ab", "c", 8000, "x").digest != PromptKey("a", "bc", 8000, "x").digest
    # Same key, fresh cache object (another process): same file.
    assert PromptCache(tmp_path, 10_000_000).get(key()) == p


def test_rejects_bad_input(tmp_path):
    c = PromptCache(tmp_path, 1000)
    with pytest.raises(ValueError):
        c.put(key(), b"")
    with pytest.raises(ValueError):
        c.put(key(), b"\x00\x00\x00")
    with pytest.raises(ValueError):
        PromptKey("e", "v", 11025, "t")
    with pytest.raises(ValueError):
        PromptCache(tmp_path, 0)


def test_get_touches_mtime(tmp_path):
    c = PromptCache(tmp_path, 10_000)
    p = c.put(key(), b"\x00\x00" * 10)
    age(p, 3600)
    before = p.stat().st_mtime
    c.get(key())
    assert p.stat().st_mtime > before + 3000


def test_lru_eviction(tmp_path):
    c = PromptCache(tmp_path, 3000, protect_s=60)
    paths = [c.put(key(f"t{i}"), b"\x00" * 1000) for i in range(3)]
    for i, p in enumerate(paths):
        age(p, 1000 - i * 100)  # t0 oldest, t2 newest, all outside protect_s
    c.get(key("t0"))  # t0 used now: most recent
    age(paths[0], 120)
    c.put(key("t3"), b"\x00" * 1000)  # 4000 > 3000: evict the least recently used (t1)
    assert c.get(key("t1")) is None
    assert c.get(key("t0")) and c.get(key("t2")) and c.get(key("t3"))
    s = c.stats()
    assert (s.entries, s.bytes, s.evictions) == (3, 3000, 1)


def test_eviction_spares_recently_used(tmp_path):
    c = PromptCache(tmp_path, 2500, protect_s=60)
    old = c.put(key("old"), b"\x00" * 1000)
    age(old, 3600)
    playing = c.put(key("playing"), b"\x00" * 1000)
    age(playing, 30)  # used 30 s ago: a call may be playing it
    c.put(key("new"), b"\x00" * 1000)
    assert not old.exists()
    assert playing.exists()
    # Everything recent: over the limit, nothing removed, nothing lost.
    c.put(key("new2"), b"\x00" * 1000)
    s = c.stats()
    assert s.entries == 3 and s.bytes == 3000 > s.max_bytes
    assert playing.exists()


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    c = PromptCache(tmp_path, 10_000)
    p = c.put(key(), b"\x01\x00" * 10)

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(cache_mod.os, "replace", boom)
    with pytest.raises(OSError):
        c.put(key(), b"\x02\x00" * 10)
    assert p.read_bytes() == b"\x01\x00" * 10  # old content intact
    assert [f.name for f in p.parent.iterdir()] == [p.name]  # temporary file removed
    monkeypatch.undo()

    def fsync_fails(fd):
        raise OSError("I/O error")

    monkeypatch.setattr(cache_mod.os, "fsync", fsync_fails)  # a write failing before the rename
    with pytest.raises(OSError):
        c.put(key("other"), b"\x00\x00" * 4)
    monkeypatch.undo()
    assert c.get(key("other")) is None
    assert not any(f.name.startswith(".") for d in tmp_path.iterdir() for f in d.iterdir())


def test_stale_tmp_files_cleaned_and_ignored(tmp_path):
    (tmp_path / "ab").mkdir()
    stale = tmp_path / "ab" / ".tmp-ab12.sln.1.x"
    stale.write_bytes(b"\x00" * 500)
    age(stale, 7200)
    fresh = tmp_path / "ab" / ".tmp-ab34.sln.2.y"
    fresh.write_bytes(b"\x00" * 500)
    c = PromptCache(tmp_path, 10_000)
    assert not stale.exists() and fresh.exists()
    assert c.stats().entries == 0 and c.stats().bytes == 0


def test_stats_counts(tmp_path):
    c = PromptCache(tmp_path, 10_000)
    c.get(key("a"))
    c.put(key("a"), b"\x00" * 100)
    c.get(key("a"))
    c.get(key("a"))
    c.put(key("a"), b"\x00" * 200)  # overwrite: size replaced, not added
    s = c.stats()
    assert (s.hits, s.misses, s.puts, s.entries, s.bytes, s.max_bytes) == (2, 1, 2, 1, 200, 10_000)


def test_sound_name(tmp_path):
    c = PromptCache(tmp_path, 10_000)
    p = c.put(key(), b"\x00" * 10)
    d = key().digest
    assert c.sound_name(p) == f"sound:{tmp_path}/{d[:2]}/{d}"
    chroot = PromptCache(tmp_path, 10_000, asterisk_path="/srv/ivr/main/tts/")
    assert chroot.sound_name(p) == f"sound:/srv/ivr/main/tts/{d[:2]}/{d}"
    remote = PromptCache(tmp_path, 10_000, http_base="http://10.0.0.5:8088/tts/")
    assert remote.sound_name(p) == f"sound:http://10.0.0.5:8088/tts/{d[:2]}/{d}.sln"
