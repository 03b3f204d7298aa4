"""``ivr web serve`` as a child process (browser tests, scripts/bench_wallboard.py): start it on a
port, wait for ``/health``, stop it with SIGTERM. The same command an operator runs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class WebConsoleProcess:
    """``python -m ivr.cli web serve --database-url URL --port PORT`` with its output in a log file."""

    def __init__(self, database_url: str, log_path: Path, *, port: int | None = None, host: str = "127.0.0.1",
                 env_overrides: dict[str, str] | None = None):
        self.database_url = database_url
        self.host = host
        self.port = port or free_port(host)
        self.log_path = Path(log_path)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_overrides or {})}
        self.env.pop("IVR_WEB_PORT", None)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "WebConsoleProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from ivr.cli import main; main()", "web", "serve",
                 "--database-url", self.database_url, "--host", self.host, "--port", str(self.port)],
                env=self.env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"web console exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"web console not healthy after {timeout:.0f}s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def add_user(database_url: str, login: str, password: str, role: str, **kwargs) -> None:
    """A console user through the same function ``ivr web user add`` calls."""
    from ivr.clitools import run_in_transaction
    from ivr.web.auth import add_user as _add

    run_in_transaction(database_url, lambda conn: _add(conn, login, password, role, **kwargs))


__all__ = ["WebConsoleProcess", "add_user", "free_port"]
