"""Asterisk instances in a cached chroot image, and installation into a system Asterisk.

One image (``settings.asterisk_root``, built once with mmdebstrap from Debian forky) holds
several named instances, each with its own folder ``/srv/ivr/<instance>/{etc,run,log,spool,db,
keys,cache}`` inside the chroot and its own ports (from Settings), so the demo stack, the test
stack and throw-away instances can run side by side. The chroot shares the host's network and
PID namespaces: ports are real host ports and the PID in the instance's pid file is a host PID.
"""

from __future__ import annotations

import base64
import difflib
import fcntl
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Sequence

from ivr.config import ConfigError, Settings
from ivr.stack.render import Directories, OperatorEndpoint, default_template_dirs, find_moddir, render_texts

DEBIAN_SUITE = "forky"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
IMAGE_PACKAGES = ("asterisk", "asterisk-core-sounds-ru-gsm", "asterisk-core-sounds-en-gsm")
# Device nodes Asterisk needs inside the chroot: (name, major, minor).
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))
INSTANCE_SUBDIRS = ("etc", "run", "log", "spool", "db", "keys", "cache")


class StackError(RuntimeError):
    """The stack could not be provisioned/started; the message says what to do."""


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class AsteriskInstance:
    """A named Asterisk instance (``settings.asterisk_instance``) in the chroot image."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.name = settings.asterisk_instance
        self.root = Path(settings.asterisk_root)
        self.inst_path = f"/srv/ivr/{self.name}"  # as seen inside the chroot
        self.host_dir = self.root / self.inst_path.lstrip("/")
        self.etc_dir = self.host_dir / "etc"
        self.conf_path = f"{self.inst_path}/etc/asterisk.conf"
        self.pid_file = self.host_dir / "run" / "asterisk.pid"
        self.log_file = Path(settings.state_dir) / f"asterisk-{self.name}.log"
        self._proc: subprocess.Popen | None = None

    def __repr__(self) -> str:
        return f"AsteriskInstance({self.name!r}, root={str(self.root)!r}, ari={self.settings.ari_url})"

    # --- image -------------------------------------------------------------------------------

    def image_ready(self) -> bool:
        return (self.root / "usr/sbin/asterisk").exists()

    def ensure_image(self) -> None:
        """Build the chroot image with mmdebstrap unless it exists; make sure /dev is usable."""
        if not self.image_ready():
            self._build_image()
        self._ensure_devices()

    def _build_image(self) -> None:
        if os.geteuid() != 0:
            raise StackError(f"building the Asterisk image at {self.root} needs root (mmdebstrap, chroot)")
        if not shutil.which("mmdebstrap"):
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            res = subprocess.run(["apt-get", "install", "-y", "mmdebstrap"], capture_output=True, text=True, env=env)
            if res.returncode != 0:  # stale package lists: refresh once and retry
                subprocess.run(["apt-get", "update"], capture_output=True, text=True, env=env)
                res = subprocess.run(["apt-get", "install", "-y", "mmdebstrap"], capture_output=True, text=True, env=env)
            if res.returncode != 0 or not shutil.which("mmdebstrap"):
                raise StackError(f"could not install mmdebstrap with apt-get (rc={res.returncode}):\n"
                                 f"{res.stderr[-2000:]}")
        tmp = self.root.with_name(self.root.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        cmd = ["mmdebstrap", "--variant=apt", "--aptopt=Acquire::Check-Valid-Until \"false\"",
               "--include=" + ",".join(IMAGE_PACKAGES), DEBIAN_SUITE, str(tmp), DEBIAN_MIRROR]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0 or not (tmp / "usr/sbin/asterisk").exists():
            raise StackError(f"mmdebstrap failed building the Asterisk image (rc={res.returncode}); command: "
                             f"{' '.join(cmd)}\n{res.stderr[-3000:]}")
        tmp.rename(self.root)

    def _ensure_devices(self) -> None:
        dev = self.root / "dev"
        dev.mkdir(exist_ok=True)
        for name, major, minor in DEVICES:
            path = dev / name
            try:
                st = path.lstat()
                if stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == major and os.minor(st.st_rdev) == minor:
                    continue
                path.unlink()
            except FileNotFoundError:
                pass
            try:
                os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
                path.chmod(0o666)
            except OSError as exc:
                raise StackError(f"cannot create device node {path} ({exc}); run as root") from None

    @property
    def moddir(self) -> str:
        return find_moddir(self.root)

    # --- config ------------------------------------------------------------------------------

    @contextmanager
    def config_lock(self):
        """Held while the instance's config files are rewritten and reloaded (`ivr dialplan
        apply`, `sync-operators`): two writers wait for each other instead of interleaving."""
        path = Path(self.settings.state_dir) / f"config-{self.name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def install_config(self, operators: Sequence[OperatorEndpoint] = ()) -> list[Path]:
        """Render the config into the instance's etc dir (stale files removed first)."""
        if not self.image_ready():
            raise StackError(f"no Asterisk image at {self.root}: call ensure_image() / run `ivr stack up`")
        directories = Directories.instance(self.name, self.moddir)
        # validate before touching anything
        texts = render_texts(self.settings, directories, operators, default_template_dirs())
        return self.install_files(texts)

    def install_files(self, texts: dict[str, str]) -> list[Path]:
        """Write an already rendered file set into the instance's etc dir (stale files removed)."""
        for sub in INSTANCE_SUBDIRS:
            (self.host_dir / sub).mkdir(parents=True, exist_ok=True)
        self.host_dir.chmod(0o700)
        for old in self.etc_dir.iterdir():
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        written = []
        for name, text in texts.items():
            path = self.etc_dir / name
            path.write_text(text, encoding="utf-8")
            path.chmod(0o640)
            written.append(path)
        return written

    # --- process -----------------------------------------------------------------------------

    def pid(self) -> int | None:
        """PID of this instance's running Asterisk, else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            pid = None
        if pid is None and self._proc is not None and self._proc.poll() is None:
            pid = self._proc.pid
        if pid is None:
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            status = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        if ") Z" in status:  # zombie: exited, not yet reaped
            if self._proc is not None and self._proc.pid == pid:
                self._proc.poll()
            return None
        if self.conf_path.encode() in cmdline and any(c.endswith(b"asterisk") for c in cmdline):
            return pid
        return None

    def is_running(self) -> bool:
        return self.pid() is not None

    def _asterisk_cmd(self, *args: str) -> list[str]:
        return ["chroot", str(self.root), "asterisk", "-C", self.conf_path, *args]

    def start(self, timeout: float = 60) -> None:
        """Start the instance (no-op if running) and wait until ARI answers."""
        if not self.is_running():
            if not self.image_ready():
                raise StackError(f"no Asterisk image at {self.root}: call ensure_image() / run `ivr stack up`")
            self._ensure_devices()
            if not (self.etc_dir / "asterisk.conf").exists():
                self.install_config()
            s = self.settings
            for what, port in (("ARI/HTTP", s.http_port), ("AMI", s.ami_port)):
                if _port_open(s.bind_host if s.bind_host != "0.0.0.0" else "127.0.0.1", port):
                    raise StackError(f"{what} port {s.bind_host}:{port} is already in use by another process; "
                                     f"stop it or choose other ports (IVR_HTTP_PORT/IVR_AMI_PORT)")
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_file, "ab") as log:
                log.write(f"\n=== {datetime.now():%Y-%m-%d %H:%M:%S} starting instance {self.name}\n".encode())
                log.flush()
                self._proc = subprocess.Popen(
                    ["chroot", str(self.root), "asterisk", "-f", "-n", "-C", self.conf_path],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                    env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"},
                    cwd="/",
                )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60) -> dict:
        """Poll ``GET /ari/asterisk/info`` until 200; return the info."""
        url = f"{self.settings.ari_url}/ari/asterisk/info"
        auth = base64.b64encode(f"{self.settings.ari_user}:{self.settings.ari_password}".encode()).decode()
        deadline = time.monotonic() + timeout
        last = "no answer"
        ready_404 = 0.0
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise StackError(f"Asterisk instance {self.name!r} exited with code {self._proc.returncode} "
                                 f"during start-up; log {self.log_file}:\n{_tail(self.log_file)}")
            req = urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"})
            try:
                with urllib.request.urlopen(req, timeout=2) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    raise StackError(f"wrong ARI credentials: {url} rejected user {self.settings.ari_user!r} "
                                     f"(HTTP 401). The running Asterisk has another IVR_ARI_PASSWORD than "
                                     f"these settings; run `ivr stack down` and `ivr stack up` to reinstall "
                                     f"its config") from None
                last = f"HTTP {exc.code}"
                if exc.code == 404 and "Asterisk Ready" in _tail(self.log_file, 200):
                    ready_404 = ready_404 or time.monotonic()
                    if time.monotonic() - ready_404 > 3:
                        raise StackError(f"Asterisk instance {self.name!r} is up but {url} answers 404: "
                                         f"res_ari did not load; log {self.log_file}:\n{_tail(self.log_file)}") from None
            except (urllib.error.URLError, OSError) as exc:
                last = str(getattr(exc, "reason", exc))
            if time.monotonic() >= deadline:
                raise StackError(f"Asterisk ARI at {url} did not answer within {timeout:.0f}s (last: {last}); "
                                 f"log {self.log_file}:\n{_tail(self.log_file)}")
            time.sleep(0.25)

    def stop(self, timeout: float = 20) -> None:
        """Stop the instance: ``core stop now``, then SIGTERM, then SIGKILL. Idempotent."""
        pid = self.pid()
        if pid is None:
            self._reap()
            return
        try:
            subprocess.run(self._asterisk_cmd("-rx", "core stop now"), capture_output=True, timeout=min(10, timeout))
        except subprocess.TimeoutExpired:
            pass
        if not self._wait_gone(pid, timeout):
            for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                if self._wait_gone(pid, wait):
                    break
            else:
                raise StackError(f"Asterisk instance {self.name!r} (pid {pid}) did not stop")
        self._reap()
        try:
            self.pid_file.unlink()
        except FileNotFoundError:
            pass

    def _reap(self) -> None:
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                return
            self._proc = None

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                self._proc.poll()
            if self.pid() != pid:
                return True
            time.sleep(0.1)
        return self.pid() != pid

    def cli(self, command: str, timeout: float = 15) -> str:
        """Run an Asterisk CLI command on the instance; return its output."""
        if not self.is_running():
            raise StackError(f"Asterisk instance {self.name!r} is not running")
        res = subprocess.run(self._asterisk_cmd("-rx", command), capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0 or "Unable to connect to remote asterisk" in res.stdout + res.stderr:
            raise StackError(f"asterisk -rx {command!r} failed (rc={res.returncode}): {(res.stdout + res.stderr)[-1000:]}")
        return res.stdout

    def reload(self, module: str | None = None) -> str:
        return self.cli(f"module reload {module}" if module else "core reload")

    def status(self) -> dict:
        """Running?, Asterisk version, active channels (for `ivr stack status`)."""
        out: dict = {"instance": self.name, "running": self.is_running(), "ari_url": self.settings.ari_url}
        if out["running"]:
            out["pid"] = self.pid()
            try:
                info = self.wait_ready(timeout=3)
                out["version"] = info.get("system", {}).get("version")
            except StackError as exc:
                out["error"] = str(exc).splitlines()[0]
            try:
                text = self.cli("core show channels count")
                for line in text.splitlines():
                    if "active channel" in line:
                        out["channels"] = int(line.split()[0])
            except (StackError, ValueError):
                pass
        return out


# --- system Asterisk ---------------------------------------------------------------------------

def install_system(settings: Settings, etc_dir: Path = Path("/etc/asterisk"), backup: bool = True,
                   dry_run: bool = False, moddir: str | None = None) -> list[tuple[str, str]]:
    """Install the product's config into a system Asterisk's ``etc_dir``.

    Directories in asterisk.conf are the system defaults (/var/run/asterisk, ...). Existing
    files are copied to ``etc_dir/../asterisk.backup-<timestamp>/`` first. Returns
    ``[(file name, "new" | "changed" | "unchanged")]``; with ``dry_run`` nothing is written.
    """
    etc_dir = Path(etc_dir)
    if moddir is None:
        try:
            moddir = find_moddir("/")
        except ConfigError:
            moddir = "/usr/lib/asterisk/modules"
    texts = render_texts(settings, Directories.system(moddir, etc=str(etc_dir)), template_dirs=default_template_dirs())
    changes = []
    for name, text in texts.items():
        path = etc_dir / name
        if not path.exists():
            changes.append((name, "new"))
        elif path.read_text(encoding="utf-8", errors="replace") != text:
            changes.append((name, "changed"))
        else:
            changes.append((name, "unchanged"))
    if dry_run:
        return changes
    if backup and etc_dir.exists() and any(etc_dir.iterdir()):
        stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
        dest = etc_dir.parent / f"{etc_dir.name}.backup-{stamp}"
        n = 1
        while dest.exists():
            n += 1
            dest = etc_dir.parent / f"{etc_dir.name}.backup-{stamp}-{n}"
        shutil.copytree(etc_dir, dest, symlinks=True)
    etc_dir.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        path = etc_dir / name
        tmp = path.with_name(name + ".ivr-tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o640)
        try:  # keep the owner (e.g. asterisk:asterisk) of the file, or of the directory
            st = path.stat() if path.exists() else etc_dir.stat()
            os.chown(tmp, st.st_uid, st.st_gid)
        except PermissionError:
            pass
        tmp.replace(path)
    return changes


def diff_system(settings: Settings, etc_dir: Path = Path("/etc/asterisk")) -> str:
    """Unified diff of what install_system would change, secrets masked."""
    moddir = "/usr/lib/asterisk/modules"
    try:
        moddir = find_moddir("/")
    except ConfigError:
        pass
    texts = render_texts(settings, Directories.system(moddir, etc=str(etc_dir)), template_dirs=default_template_dirs())
    out = []
    for name, text in texts.items():
        path = Path(etc_dir) / name
        old = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        out.extend(difflib.unified_diff(old.splitlines(True), text.splitlines(True), f"a/{name}", f"b/{name}"))
    body = "".join(out)
    for secret in (settings.ari_password, settings.ami_secret):
        if secret:
            body = body.replace(secret, "***")
    return body
