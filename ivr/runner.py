"""Run the real ``ivr-controller`` as a background process (demo, tests, ``ivr stack``).

The controller gets its settings through the environment, exactly as a systemd unit would give
them; its log goes to a file; a pid file lets a later command (``ivr stack down``) stop it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from ivr.config import PROJECT_ROOT, Settings


def settings_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("IVR_")}
    env.update({
        "DATABASE_URL": settings.database_url or "",
        # Everything is passed explicitly; a stray env file must not override it.
        "IVR_ENV_FILE": str(settings.state_dir / "controller-has-no-env-file"),
        "IVR_BIND_HOST": settings.bind_host,
        "IVR_SIP_PORT": str(settings.sip_port),
        "IVR_HTTP_PORT": str(settings.http_port),
        "IVR_AMI_PORT": str(settings.ami_port),
        "IVR_AGI_PORT": str(settings.agi_port),
        "IVR_HEALTH_PORT": str(settings.health_port),
        "IVR_ARI_USER": settings.ari_user,
        "IVR_ARI_PASSWORD": settings.ari_password,
        "IVR_ARI_APP": settings.ari_app,
        "IVR_AMI_USER": settings.ami_user,
        "IVR_AMI_SECRET": settings.ami_secret,
        "IVR_PUBLIC_NUMBER": settings.public_number,
        "IVR_SOUND_LANGUAGE": settings.sound_language,
        "IVR_DIGIT_TIMEOUT": str(settings.digit_timeout),
        "IVR_STATE_DIR": str(settings.state_dir),
        "PYTHONUNBUFFERED": "1",
    })
    if not settings.database_url:
        env.pop("DATABASE_URL")
    return env


async def fetch_health(settings: Settings, timeout: float = 5.0) -> dict:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{settings.bind_host}:{settings.health_port}/health",
                               timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            return await resp.json()


class ControllerProcess:
    MODULE = "ivr.controller"
    NAME = "controller"

    def __init__(self, settings: Settings, log_path: Path | None = None,
                 env_overrides: dict[str, str] | None = None):
        self.settings = settings
        self.log_path = log_path or settings.state_dir / f"{self.NAME}-{settings.asterisk_instance}.log"
        self.pid_path = settings.state_dir / f"{self.NAME}-{settings.asterisk_instance}.pid"
        self.env = settings_env(settings) | (env_overrides or {})
        self.proc: subprocess.Popen | None = None
        self._log_offset = 0

    def start(self, *, detached: bool = False) -> "ControllerProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.MODULE], env=self.env, cwd=PROJECT_ROOT,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=detached,
        )
        log.close()
        self.pid_path.write_text(str(self.proc.pid))
        return self

    def wait_healthy(self, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        last: dict | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.NAME} exited with code {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                last = asyncio.run(self.fetch_health())
                if last.get("ok"):
                    return last
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.NAME} not healthy after {timeout:.0f}s: {last}\n{self.log_text()[-3000:]}")

    async def fetch_health(self) -> dict:
        return await fetch_health(self.settings)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (crash-safety tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.pid_path.unlink(missing_ok=True)

    def log_text(self, *, since_start: bool = True) -> str:
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as fh:
            if since_start:
                fh.seek(self._log_offset)
            return fh.read().decode("utf-8", "replace")

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return stop_controller(self.settings, timeout)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.pid_path.unlink(missing_ok=True)
        return self.proc.returncode


class RobotProcess(ControllerProcess):
    """``ivr-robot`` (dialer, notifications API, webhook, SMS); healthy = its ARI app connected."""
    MODULE = "ivr.notify.service"
    NAME = "robot"

    async def fetch_health(self) -> dict:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{self.settings.bind_host}:{self.settings.api_port}/health",
                                   timeout=aiohttp.ClientTimeout(total=5)) as resp:
                return await resp.json()


def robot_env(settings: Settings) -> dict[str, str]:
    """The robot's settings beyond the controller's (settings_env) as environment variables."""
    env = {
        "IVR_API_PORT": str(settings.api_port), "IVR_API_TOKEN": settings.api_token,
        "IVR_COMPANY_NAME": settings.company_name, "IVR_OUTBOUND_TRUNK": settings.outbound_trunk,
        "IVR_DIALER_WORKER": settings.dialer_worker, "IVR_DIALER_MAX_CHANNELS": str(settings.dialer_max_channels),
        "IVR_DIALER_CPS": str(settings.dialer_cps), "IVR_DIALER_CLIENT_INTERVAL": str(settings.dialer_client_interval),
        "IVR_DIALER_RING_TIMEOUT": str(settings.dialer_ring_timeout),
        "IVR_ROBOT_DIGIT_TIMEOUT": str(settings.robot_digit_timeout),
        "IVR_ROBOT_TOTAL_TIMEOUT": str(settings.robot_total_timeout),
        "IVR_ASTERISK_ROOT": str(settings.asterisk_root), "IVR_ASTERISK_INSTANCE": settings.asterisk_instance,
        "IVR_TTS_CACHE_MB": str(settings.tts_cache_mb),
        "IVR_ROBOT_NO_SPEECH_TIMEOUT": str(settings.robot_no_speech_timeout),
        "IVR_ASR_QUEUE": str(settings.asr_queue),
        "IVR_UTTERANCE_RETENTION_DAYS": str(settings.utterance_retention_days),
        "IVR_ASR_ENGINE": settings.asr_engine,
    }
    for key, value in (("IVR_ROBOT_CALLER_ID", settings.robot_caller_id), ("IVR_WEBHOOK_URL", settings.webhook_url),
                       ("IVR_WEBHOOK_SECRET", settings.webhook_secret), ("IVR_SMPP_HOST", settings.smpp_host),
                       ("IVR_SMPP_SYSTEM_ID", settings.smpp_system_id),
                       ("IVR_SMPP_PASSWORD", settings.smpp_password), ("IVR_SMS_SOURCE", settings.sms_source),
                       ("IVR_SMS_HTTP_URL", settings.sms_http_url), ("IVR_SMS_HTTP_TOKEN", settings.sms_http_token),
                       ("IVR_VOSK_MODEL", settings.vosk_model), ("IVR_SILERO_MODEL", settings.silero_model)):
        if value:
            env[key] = value
    if settings.smpp_host:
        env["IVR_SMPP_PORT"] = str(settings.smpp_port)
    return env


def stop_controller(settings: Settings, timeout: float = 15.0) -> int | None:
    """Stop a controller started earlier (possibly by another command) via its pid file."""
    pid_path = settings.state_dir / f"controller-{settings.asterisk_instance}.pid"
    try:
        pid = int(pid_path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        pid_path.unlink(missing_ok=True)
        return None
    if b"ivr.controller" not in cmdline:  # the pid was reused by something else
        pid_path.unlink(missing_ok=True)
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)
    pid_path.unlink(missing_ok=True)
    return 0
