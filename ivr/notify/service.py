"""ivr-robot: the confirmation robot's process - dialer, notifications API, CRM webhook, SMS.

Wiring only (the logic is in dialer.py, robot_call.py, outcomes.py, webhook.py, sms_channel.py):

* its own ARI application ``<ari_app>-robot-<worker>``: a restarted dialer with the same worker
  name gets back the calls it left in Asterisk (adopted and finished, see dialer.py);
* the HTTP API on ``bind_host:api_port`` (loopback by default; bearer token, no default),
  plus ``/health`` and ``/tts/`` (the prompt cache, for an Asterisk on another host);
* the webhook sender (idles when no URL is configured; rows stay queued);
* the SMS channel when an SMSC (SMPP) or an HTTP gateway is configured.

``IVR_CLOCK_START`` (ISO time) starts the robot's clock at that instant and lets it run: used by
the end-to-end tests and the demo to place "now" inside the call window whatever the real hour.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from aiohttp import web

from ivr.ari import AriAuthError, AriClient, AriEventStream, AriUnavailable, CallDispatcher
from ivr.config import ConfigError, Settings, load_settings
from ivr.logs import setup_logging
from ivr.notify import http as api
from ivr.notify.dialer import Dialer, DialerLimits
from ivr.notify.retry import load_policies
from ivr.notify.robot_call import RobotTimings
from ivr.notify.templates import TemplateStore, default_folder
from ivr.speech.cache import PromptCache
from ivr.speech.tts import EspeakEngine, FestivalEngine, Synthesizer
from models.db import DEFAULT_LOCAL_URL, make_async_engine, normalize_url

log = logging.getLogger("ivr.robot")

EXIT_CONFIG = 2
EXIT_AUTH = 3


def make_clock(start: str | None) -> Callable[[], datetime]:
    if not start:
        return lambda: datetime.now(timezone.utc)
    try:
        origin = datetime.fromisoformat(start)
    except ValueError:
        raise ConfigError(f"IVR_CLOCK_START={start!r} is not an ISO time") from None
    if origin.tzinfo is None:
        raise ConfigError("IVR_CLOCK_START needs a time zone offset")
    mono0 = time.monotonic()
    return lambda: origin + timedelta(seconds=time.monotonic() - mono0)


def tts_location(settings: Settings) -> tuple[Path, str | None, str | None]:
    """(host folder, path as Asterisk sees it, http base) of the prompt cache; docs/tts.md."""
    http_base = os.environ.get("IVR_TTS_HTTP_BASE") or None
    explicit = os.environ.get("IVR_TTS_DIR")
    if explicit:
        return Path(explicit), os.environ.get("IVR_TTS_ASTERISK_PATH") or None, http_base
    inst = f"/srv/ivr/{settings.asterisk_instance}"
    if settings.asterisk_root.exists():  # the private chroot instance: inside it, both sides see it
        return settings.asterisk_root / inst.lstrip("/") / "tts", f"{inst}/tts", http_base
    return settings.state_dir / "tts", None, http_base


class Robot:
    def __init__(self, settings: Settings, database_url: str, *, clock: Callable[[], datetime]):
        self.settings = settings
        self.engine = make_async_engine(normalize_url(database_url))
        self.ari = AriClient(settings.ari_url, settings.ari_user, settings.ari_password)
        self.app_name = f"{settings.ari_app}-robot-{settings.dialer_worker}"
        folder, asterisk_path, http_base = tts_location(settings)
        self.tts_folder = folder
        cache = PromptCache(folder, settings.tts_cache_mb * 1024 * 1024, asterisk_path=asterisk_path,
                            http_base=http_base)
        self.synthesizer = Synthesizer([FestivalEngine(), EspeakEngine()], cache, 8000)
        self.synthesizers = {"festival": self.synthesizer}
        if settings.silero_model:
            # optional: a Silero model file the admin supplies, for templates with tts_engine: silero
            from ivr.speech.silero import SileroEngine
            self.synthesizers["silero"] = Synthesizer(
                [SileroEngine(settings.silero_model, speaker=settings.silero_speaker), FestivalEngine(),
                 EspeakEngine()], cache, 8000)
        self.policies = load_policies(os.environ.get("IVR_NOTIFY_POLICY") or None)
        self.templates = TemplateStore(Path(os.environ.get("IVR_NOTIFY_TEMPLATES") or default_folder()),
                                       company_name=settings.company_name)
        self.sms_driver = None
        self.sms = self._sms_channel(clock)
        self.dispatcher = CallDispatcher(self.app_name, self._adopt)
        self.stream = AriEventStream(self.ari, self.app_name, self.dispatcher)
        self.speech = self._speech_kit()
        self.dialer = Dialer(
            engine=self.engine, ari=self.ari, dispatcher=self.dispatcher, app=self.app_name,
            synthesizer=self.synthesizer, policies=self.policies, worker=settings.dialer_worker,
            trunk=settings.outbound_trunk,
            caller_id=f"\"{settings.company_name or 'IVR'}\" <{(settings.robot_caller_id or settings.public_number).lstrip('+')}>",
            language=settings.sound_language,
            limits=DialerLimits(max_channels=settings.dialer_max_channels, cps=settings.dialer_cps,
                                client_interval_s=settings.dialer_client_interval),
            timings=RobotTimings(ring_timeout=settings.dialer_ring_timeout, digit_timeout=settings.robot_digit_timeout,
                                 total_timeout=settings.robot_total_timeout),
            sms=self.sms, clock=clock, speech=self.speech, synthesizers=self.synthesizers)
        self.webhook = self._webhook_sender(clock)
        self._runner: web.AppRunner | None = None
        self.tts_http_requests = 0
        self._tasks: list[asyncio.Task] = []
        self._stop = asyncio.Event()

    async def _adopt(self, session, first_event) -> None:
        await self.dialer.adopt(session, first_event)

    def _speech_kit(self):
        """ASR (faster-whisper, one shared worker pool) + silero-vad per call, when installed;
        otherwise None and the spoken dialog falls back to its key menu (logged)."""
        from ivr.notify.speech_dialog import DialogTimings, SpeechKit, VadSegmenter

        s = self.settings
        try:
            from ivr.speech.asr import AsrPool, WhisperEngine
            from ivr.speech.models import silero_vad_onnx, whisper_base_ready

            silero_vad_onnx()
            if s.asr_engine == "vosk":
                # a Russian Vosk model the admin supplies; recognition restricted to the dialog's phrases
                from ivr.notify.speech_dialog import DIALOG_GRAMMAR
                from ivr.speech.asr import VoskEngine

                if not s.vosk_model:
                    raise RuntimeError("IVR_ASR_ENGINE=vosk needs IVR_VOSK_MODEL (a Russian Vosk model folder)")
                engine = VoskEngine(s.vosk_model, grammar=DIALOG_GRAMMAR if s.vosk_grammar else None)
            else:
                if not whisper_base_ready():
                    raise RuntimeError("the Whisper base model is not assembled (scripts/bootstrap.sh does it)")
                engine = WhisperEngine()
            pool = AsrPool(engine, max_workers=1, max_queue=s.asr_queue)
        except Exception as exc:  # ImportError, missing model: keys-only dialog
            log.warning("event=speech_off reason=%r", str(exc)[:200])
            return None
        self.asr_pool = pool
        return SpeechKit(recognizer=pool, segmenter_factory=VadSegmenter,
                         audio_dir=s.state_dir / "utterances", bind_host=s.bind_host,
                         timings=DialogTimings(no_speech_s=s.robot_no_speech_timeout),
                         retention_days=s.utterance_retention_days)

    def _sms_channel(self, clock):
        s = self.settings
        driver = None
        if s.smpp_host:
            from ivr.sms.smpp import SmppSender
            driver = SmppSender(s.smpp_host, s.smpp_port, s.smpp_system_id, s.smpp_password,
                                s.sms_source or s.public_number.lstrip("+"))
        elif s.sms_http_url:
            from ivr.sms.http_gateway import HttpSmsGateway
            # Delivery reports come back to POST /sms/receipts on our API (its own secret, no token).
            driver = HttpSmsGateway(s.sms_http_url, token=s.sms_http_token, sender=s.sms_source or s.public_number,
                                    callback_url=os.environ.get("IVR_SMS_HTTP_CALLBACK_URL") or None,
                                    callback_secret=os.environ.get("IVR_SMS_HTTP_CALLBACK_SECRET") or None)
        if driver is None:
            return None
        self.sms_driver = driver
        from ivr.notify.sms_channel import SmsChannel
        return SmsChannel(self.engine, driver, self.policies, clock=clock)

    def _webhook_sender(self, clock):
        from ivr.notify.webhook import WebhookSender
        return WebhookSender(self.engine, self.settings.webhook_url or None,
                             secret=self.settings.webhook_secret or None, clock=clock)

    async def _load_asr(self) -> None:
        started = time.monotonic()
        try:
            await self.asr_pool.load()
            log.info("event=asr_loaded seconds=%.1f", time.monotonic() - started)
        except Exception as exc:  # the dialog then falls back to its key menu per utterance
            log.error("event=asr_load_failed reason=%r", str(exc)[:200])

    async def _connect_sms(self) -> None:
        """Connect the SMS driver, retrying with backoff: an SMSC that is down delays SMS
        (their attempts are retried by the policy), never the start of the robot."""
        delay = 1.0
        while True:
            try:
                await self.sms_driver.connect()
                log.info("event=sms_connected driver=%s", type(self.sms_driver).__name__)
                return
            except Exception as exc:  # SmppUnavailable, OSError, auth errors: all logged, retried
                log.warning("event=sms_connect_failed in=%.0fs reason=%r", delay, str(exc)[:200])
                await asyncio.sleep(delay)
                delay = min(delay * 2, 300)

    @web.middleware
    async def _count_tts(self, request: web.Request, handler):
        if request.path.startswith("/tts/"):
            self.tts_http_requests += 1
        return await handler(request)

    async def health(self, request: web.Request) -> web.Response:
        report = {
            "ari": {"connected": self.stream.connected.is_set(), "app": self.app_name},
            "dialer": {"worker": self.settings.dialer_worker, "active_calls": self.dialer.active_calls,
                       "placed": self.dialer.placed, "finished": self.dialer.finished},
            "sms": self.sms is not None, "webhook_url": bool(self.settings.webhook_url),
            "tts": {"folder": str(self.tts_folder), "http_requests": self.tts_http_requests},
            "speech": self.speech is not None,
        }
        report["ok"] = report["ari"]["connected"]
        return web.json_response(report)

    async def start(self) -> None:
        try:
            await self.ari.asterisk_info()
        except AriAuthError:
            raise SystemExit(EXIT_AUTH) from None
        except AriUnavailable as exc:
            log.warning("event=ari_unreachable reason=%r action=retrying_in_background", exc.reason)
        app = api.make_app(self.engine, self.templates, token=self.settings.api_token or None,
                           policies=self.policies)
        app.router.add_get("/health", self.health)
        app.router.add_static("/tts/", self.tts_folder, show_index=False, follow_symlinks=False)
        app.middlewares.append(self._count_tts)
        if self.sms is not None and hasattr(self.sms_driver, "add_callback_route"):
            self.sms_driver.add_callback_route(app, "/sms/receipts")
        await self.dialer.prepare()
        if self.speech is not None:
            # in the background: calls left by a previous run must be adopted at once, not after
            # the model load (seconds); the first answer waits for it only if it comes that early
            self._tasks.append(asyncio.create_task(self._load_asr(), name="asr-load"))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.settings.bind_host, self.settings.api_port).start()
        self._tasks.append(asyncio.create_task(self.stream.run(), name="ari-stream"))
        await asyncio.wait_for(self.stream.connected.wait(), 60)
        await asyncio.sleep(0.5)  # let the stream's own reconcile adopt our calls left in Asterisk
        self._tasks.append(asyncio.create_task(self.dialer.run(), name="dialer"))
        self._tasks.append(asyncio.create_task(self.webhook.run(), name="webhook"))
        if self.sms is not None:
            self._tasks.append(asyncio.create_task(self._connect_sms(), name="sms-connect"))
            self._tasks.append(asyncio.create_task(self.sms.run_receipts(), name="sms-receipts"))
        log.info("event=robot_started app=%s api=http://%s:%d", self.app_name, self.settings.bind_host,
                 self.settings.api_port)

    async def run(self) -> None:
        await self.start()
        stopper = asyncio.create_task(self._stop.wait())
        # sms-connect ends normally once the SMSC is bound: only the long-running tasks count
        watched = [t for t in self._tasks if t.get_name() not in ("sms-connect", "asr-load")]
        await asyncio.wait([stopper, *watched], return_when=asyncio.FIRST_COMPLETED)
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("event=robot_task_failed task=%s reason=%r", task.get_name(), str(task.exception())[:300])
        stopper.cancel()
        await self.shutdown()

    def request_stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        await self.dialer.stop(timeout=10)
        await self.stream.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self.sms is not None:
            try:
                await self.sms_driver.close()
            except Exception:
                pass
        await self.ari.close()
        await self.engine.dispose()
        log.info("event=robot_stopped")


async def _amain(settings: Settings, clock) -> int:
    robot = Robot(settings, settings.database_url or DEFAULT_LOCAL_URL, clock=clock)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, robot.request_stop)
    await robot.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ivr-robot", description="Run the confirmation robot (dialer + API).")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        settings = load_settings()
        settings.require_secrets()
        if not settings.api_token:
            raise ConfigError("IVR_API_TOKEN not set: the notifications API has no default token "
                              "(`ivr stack init` generates one)")
        clock = make_clock(os.environ.get("IVR_CLOCK_START"))
    except ConfigError as exc:
        print(f"ivr-robot: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return asyncio.run(_amain(settings, clock))
    except SystemExit as exc:
        if exc.code == EXIT_AUTH:
            print(f"ivr-robot: ARI refused user {settings.ari_user!r}: wrong user or password", file=sys.stderr)
        return int(exc.code or 0)


if __name__ == "__main__":
    sys.exit(main())
