"""A configuration *file set*: file name -> text, as rendered or as found in an etc folder."""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

from ivr.config import Settings
from ivr.stack.render import (
    CONF_FILES, Directories, OperatorEndpoint, default_template_dirs, find_moddir, render_texts,
)

FileSet = dict[str, str]

# Placeholders stored in the database instead of the ARI/AMI secrets: they belong to the
# settings (var/ivr.env), not to a dialplan version, and a rollback must never bring back a
# rotated secret.
SECRET_PLACEHOLDERS = {"ari_password": "@@IVR_ARI_PASSWORD@@", "ami_secret": "@@IVR_AMI_SECRET@@"}


def live_directories(settings: Settings) -> Directories:
    """The private instance's layout (as ``AsteriskInstance.install_config`` writes it)."""
    try:
        moddir = find_moddir(settings.asterisk_root)
    except Exception:  # no image yet: same fallback as render_config
        moddir = "/usr/lib/asterisk/modules"
    return Directories.instance(settings.asterisk_instance, moddir)


def render_set(settings: Settings, operators: Sequence[OperatorEndpoint] = (),
               template_dirs: Sequence[Path | str] | None = None,
               directories: Directories | None = None) -> FileSet:
    """Every config file, rendered; ConfigError on a broken template or a hostile value.
    ``template_dirs`` None: the admin's folders of IVR_DIALPLAN_TEMPLATES (if any)."""
    if template_dirs is None:
        template_dirs = default_template_dirs()
    return render_texts(settings, directories or live_directories(settings), list(operators), template_dirs)


def read_dir(path: Path | str, names: Iterable[str] | None = None) -> FileSet:
    """The files of ``path`` (only ``names`` if given; CONF_FILES-like ``*.conf`` otherwise)."""
    path = Path(path)
    out: FileSet = {}
    if not path.is_dir():
        return out
    wanted = set(names) if names is not None else None
    for child in sorted(path.iterdir()):
        if not child.is_file() or (wanted is not None and child.name not in wanted):
            continue
        if wanted is None and not child.name.endswith(".conf"):
            continue
        out[child.name] = child.read_text(encoding="utf-8", errors="replace")
    return out


def write_dir(files: FileSet, path: Path | str, *, remove_others: bool = False) -> list[Path]:
    """Write atomically (temp file + rename), mode 0640. ``remove_others``: delete ``*.conf``
    files of the folder that are not in ``files``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        if "/" in name or name.startswith("."):
            raise ValueError(f"refusing file name {name!r}")
        target = path / name
        tmp = path / f".{name}.ivr-tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o640)
        os.replace(tmp, target)
        written.append(target)
    if remove_others:
        for child in path.iterdir():
            if child.is_file() and child.name.endswith(".conf") and child.name not in files:
                child.unlink()
    return written


def sha256_of(files: FileSet) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    return h.hexdigest()


def secrets_of(settings: Settings, operators: Sequence[OperatorEndpoint] = ()) -> list[str]:
    return [s for s in (settings.ari_password, settings.ami_secret, *(op.secret for op in operators)) if s]


_PASSWORD_RE = re.compile(r"^\s*(?:password|secret)\s*=\s*(\S+)\s*$", re.M)


def secrets_in(files: FileSet) -> list[str]:
    """Passwords written in a file set (operators' SIP secrets, ...), to mask them in diffs."""
    return [m for text in files.values() for m in _PASSWORD_RE.findall(text)]


def mask(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def diff(old: FileSet, new: FileSet, secrets: Iterable[str] = (), old_label: str = "live",
         new_label: str = "rendered") -> str:
    """Unified diff of two file sets (files in either), secrets replaced by ``***``."""
    secrets = list(secrets)
    out: list[str] = []
    for name in sorted(set(old) | set(new), key=lambda n: (CONF_FILES.index(n) if n in CONF_FILES else 999, n)):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        out.extend(difflib.unified_diff(
            (a or "").splitlines(True), (b or "").splitlines(True),
            f"{old_label}/{name}" if a is not None else "/dev/null",
            f"{new_label}/{name}" if b is not None else "/dev/null"))
    text = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in out)
    return mask(text, secrets)


def changed_files(old: FileSet, new: FileSet) -> list[str]:
    return sorted(n for n in set(old) | set(new) if old.get(n) != new.get(n))


def to_stored(files: FileSet, settings: Settings) -> FileSet:
    """The file set as stored in the database: ARI/AMI secrets replaced by placeholders."""
    out = {}
    for name, text in files.items():
        for field, placeholder in SECRET_PLACEHOLDERS.items():
            secret = getattr(settings, field)
            if secret:
                text = text.replace(secret, placeholder)
        out[name] = text
    return out


def from_stored(files: FileSet, settings: Settings) -> FileSet:
    """A stored file set with the current ARI/AMI secrets put back."""
    out = {}
    for name, text in files.items():
        for field, placeholder in SECRET_PLACEHOLDERS.items():
            text = text.replace(placeholder, getattr(settings, field))
        out[name] = text
    return out
