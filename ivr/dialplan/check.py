"""``ivr dialplan check``: load a file set into a throw-away Asterisk and see what it made of it.

The throw-away instance is ``<instance>-check`` in the same chroot image, on ports derived from
the checked instance's (each shifted by CHECK_PORT_SHIFT, so two stacks with different ports get
different check ports and none of them lands on a port a stack uses), with its own random
ARI/AMI secrets. Files that only say *where* an instance lives (directories, HTTP/AMI/ARI
listeners, RTP range) are the throw-away instance's own; the SIP transport's port is rewritten;
every other file - the dialplan, the endpoints, the trunk - is loaded exactly as given.

It fails on: a template that does not render (caught before Asterisk), Asterisk not starting,
any ERROR/WARNING in its log while loading, and anything :mod:`ivr.dialplan.verify` finds
missing.
"""

from __future__ import annotations

import fcntl
import re
import secrets
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ivr.config import Settings
from ivr.dialplan.files import FileSet
from ivr.dialplan.verify import Expectations, log_problems, verify
from ivr.stack.asterisk import AsteriskInstance, StackError, _tail
from ivr.stack.render import Directories, render_texts

CHECK_PORT_SHIFT = 37
# Files bound to one instance (paths, listeners, secrets): taken from the throw-away instance.
INSTANCE_FILES = ("asterisk.conf", "http.conf", "manager.conf", "ari.conf", "rtp.conf")


@dataclass
class CheckResult:
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    instance: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


def check_settings(settings: Settings) -> Settings:
    """Settings of the throw-away instance that checks ``settings``' configuration."""
    shift = CHECK_PORT_SHIFT
    rtp_start = settings.rtp_end + shift
    if rtp_start + 19 > 65535:
        rtp_start = settings.rtp_start - shift - 20
    name = f"{settings.asterisk_instance}-check"[:64]
    return settings.with_overrides(
        asterisk_instance=name, sip_port=settings.sip_port + shift, http_port=settings.http_port + shift,
        ami_port=settings.ami_port + shift, agi_port=settings.agi_port + shift,
        health_port=settings.health_port + shift, rtp_start=rtp_start, rtp_end=rtp_start + 19,
        ari_password=secrets.token_urlsafe(18), ami_secret=secrets.token_urlsafe(18))


def adapt(files: FileSet, live: Settings, check: Settings, moddir: str) -> FileSet:
    """The file set as the throw-away instance loads it."""
    own = render_texts(check, Directories.instance(check.asterisk_instance, moddir))
    out = dict(files)
    for name in INSTANCE_FILES:
        out[name] = own[name]
    if "pjsip.conf" in out:
        out["pjsip.conf"] = re.sub(
            rf"^(\s*bind\s*=\s*\S*?):{live.sip_port}(\s*)$", rf"\g<1>:{check.sip_port}\g<2>",
            out["pjsip.conf"], flags=re.M)
    return out


def _udp_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
            return True
        except OSError:
            return False


@contextmanager
def _lock(settings: Settings):
    path = Path(settings.state_dir) / f"dialplan-check-{settings.asterisk_instance}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def check_files(settings: Settings, files: FileSet, expect: Expectations, *, timeout: float = 45) -> CheckResult:
    """Start a throw-away instance with ``files`` (rendered for ``settings``' instance), verify,
    stop it. Never touches the live instance."""
    started = time.monotonic()
    cs = check_settings(settings)
    result = CheckResult(instance=cs.asterisk_instance)
    inst = AsteriskInstance(cs)
    with _lock(settings):
        inst.ensure_image()
        inst.stop()  # a leftover of an interrupted check
        try:
            inst.install_files(adapt(files, settings, cs, inst.moddir))
            messages = inst.host_dir / "log" / "messages.log"
            if messages.exists():
                messages.unlink()
            if not _udp_free(cs.bind_host if cs.bind_host != "0.0.0.0" else "127.0.0.1", cs.sip_port):
                raise StackError(f"UDP port {cs.sip_port} for the check instance is taken by another process")
            try:
                inst.start(timeout=timeout)
            except StackError as exc:
                result.problems.append(f"Asterisk did not start with this configuration: {exc}")
            else:
                inst.cli("core waitfullybooted", timeout=timeout)
                result.problems.extend(verify(inst.cli, expect))
            if messages.exists():
                log = log_problems(messages.read_text(encoding="utf-8", errors="replace").splitlines())
                result.problems[:0] = [f"Asterisk log: {line}" for line in log]
            elif not result.problems:
                result.problems.append(f"no Asterisk log at {messages} (logger.conf changed?); "
                                       f"console log:\n{_tail(inst.log_file)}")
        finally:
            inst.stop()
    result.seconds = time.monotonic() - started
    return result
