"""ivr-controller: the ARI application that drives every call of the product.

Wiring only: the adapters (ARI, AMI, FastAGI, database journal) are built here and handed to
the capability plugins; the logic lives in the plugins (ivr/calls/...).

Start-up faults are told apart on purpose:
- wrong ARI or AMI credentials: a clear message and exit code 3 (retrying cannot help);
- Asterisk not reachable: one log line per attempt, retried with back-off, forever;
- database not reachable: a clear message, calls are still answered, records are spooled.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from sqlalchemy import text

from ivr.agi import AgiServer
from ivr.ami import AmiAdapter, AmiAuthError, AmiUnavailable
from ivr.ari import AriAuthError, AriClient, AriEventStream, AriUnavailable, CallDispatcher
from ivr.calls.journal import CallJournal
from ivr.calls.plugin import CallsPlugin
from ivr.config import ConfigError, Settings, load_settings
from ivr.health import HealthServer
from ivr.inbound.plugin import InboundPlugin
from ivr.inbound.store import InboundStore
from ivr.logs import setup_logging
from models.db import DEFAULT_LOCAL_URL, make_async_engine, mask_url, normalize_url

log = logging.getLogger("ivr.controller")

EXIT_CONFIG = 2
EXIT_AUTH = 3


class FatalStartupError(Exception):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class Controller:
    def __init__(self, settings: Settings, database_url: str):
        self.settings = settings
        self.database_url = normalize_url(database_url)
        self.ari = AriClient(settings.ari_url, settings.ari_user, settings.ari_password)
        self.engine = make_async_engine(self.database_url)
        self.journal = CallJournal(self.engine, settings.state_dir / "spool" / f"calls-{settings.ari_app}.jsonl")
        # Routing reads on their own pool without per-checkout pings (see InboundStore._run).
        self.routing_engine = make_async_engine(self.database_url, pre_ping=False, pool_size=15,
                                                synchronous_commit=False)
        self.inbound = InboundPlugin(settings, self.ari, self.journal, InboundStore(self.routing_engine))
        self.calls = CallsPlugin(settings, self.ari, self.journal, self.inbound)
        self.dispatcher = CallDispatcher(settings.ari_app, self.calls.start_flow)
        self.stream = AriEventStream(self.ari, settings.ari_app, self.dispatcher)
        self.ami = AmiAdapter(settings.bind_host, settings.ami_port, settings.ami_user, settings.ami_secret)
        self.agi = AgiServer(settings.bind_host, settings.agi_port)
        self.health = HealthServer(settings.bind_host, settings.health_port, self.health_report)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def health_report(self) -> dict:
        db_ok = await self._database_answers()
        report = {
            "ari": {"url": self.settings.ari_url, "connected": self.stream.connected.is_set(),
                    "connections": self.stream.connections},
            "ami": {"url": self.ami.url, "logged_in": self.ami.logged_in, "ping": await self.ami.ping()},
            "agi": {"address": f"{self.settings.bind_host}:{self.settings.agi_port}", "listening": self.agi.listening,
                    "requests": self.agi.requests},
            "database": {"url": mask_url(self.database_url), "ok": db_ok, "spool_pending": self.journal.spool_pending,
                         "written": self.journal.written, "spooled": self.journal.spooled},
            "calls": {"active": self.dispatcher.active_calls},
            "inbound": {"ruleset_version": self.inbound._ruleset_version,
                        "operators_live": {ext: {"ringing": bool(st.ringing_for), "talking": bool(st.talking_in)}
                                           for ext, st in self.inbound.board.live.items()}},
        }
        report["ok"] = bool(report["ari"]["connected"] and report["ami"]["ping"] and self.agi.listening and db_ok)
        return report

    async def _database_answers(self) -> bool:
        try:
            async with asyncio.timeout(3):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def start(self) -> None:
        # Credentials first: a wrong password must stop us with a clear message, not retry.
        try:
            info = await self.ari.asterisk_info()
            log.info("event=ari_ok url=%s asterisk=%s", self.settings.ari_url,
                     info.get("system", {}).get("version", "?"))
        except AriAuthError:
            raise FatalStartupError(
                f"ARI refused user {self.settings.ari_user!r} at {self.settings.ari_url}: wrong user or password "
                "(IVR_ARI_USER / IVR_ARI_PASSWORD must match ari.conf)", EXIT_AUTH) from None
        except AriUnavailable as exc:
            log.warning("event=ari_unreachable url=%s reason=%r action=retrying_in_background",
                        self.settings.ari_url, exc.reason)

        if not await self._database_answers():
            log.error("event=database_unreachable url=%s action=calls_still_answered_records_spooled",
                      mask_url(self.database_url))
            self.journal.database_up = False

        try:
            await self.ami.connect(timeout=3)
        except AmiAuthError as exc:
            raise FatalStartupError(str(exc) + " (IVR_AMI_USER / IVR_AMI_SECRET must match manager.conf)",
                                    EXIT_AUTH) from None
        except AmiUnavailable as exc:
            log.warning("event=ami_unreachable reason=%r action=retrying_in_background", str(exc))

        await self.agi.start()
        await self.health.start()
        await self.inbound.resume_summons()
        self._tasks = [
            asyncio.create_task(self.stream.run(), name="ari-stream"),
            asyncio.create_task(self.journal.run(), name="call-journal"),
        ]
        log.info("event=controller_started app=%s health=http://%s:%d/health", self.settings.ari_app,
                 self.settings.bind_host, self.settings.health_port)

    async def run(self) -> None:
        await self.start()
        stop_waiter = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait([stop_waiter, self._tasks[0]], return_when=asyncio.FIRST_COMPLETED)
        try:
            if self._tasks[0] in done and self._tasks[0].exception() is not None:
                exc = self._tasks[0].exception()
                if isinstance(exc, AriAuthError):
                    raise FatalStartupError(
                        f"ARI refused user {self.settings.ari_user!r} at {self.settings.ari_url}: wrong user or password",
                        EXIT_AUTH)
                raise exc
        finally:
            stop_waiter.cancel()
            await self.shutdown()

    def request_stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        log.info("event=controller_stopping active_calls=%d", self.dispatcher.active_calls)
        await self.stream.stop()
        await self.dispatcher.shutdown(timeout=5)
        await self.inbound.close()
        if not await self.journal.flush(timeout=10):
            log.error("event=journal_flush_timeout spool=%s", self.journal.spool_path)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.health.stop()
        await self.agi.stop()
        self.ami.close()
        await self.ari.close()
        await self.engine.dispose()
        await self.routing_engine.dispose()
        log.info("event=controller_stopped")


async def _amain(settings: Settings, database_url: str) -> int:
    controller = Controller(settings, database_url)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, controller.request_stop)
    try:
        await controller.run()
    except FatalStartupError as exc:
        log.error("event=fatal reason=%r", str(exc))
        print(f"ivr-controller: {exc}", file=sys.stderr)
        await controller.shutdown()
        return exc.exit_code
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ivr-controller", description="Run the ARI controller of the IVR/PBX.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        settings = load_settings()
        settings.require_secrets()
    except ConfigError as exc:
        print(f"ivr-controller: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return asyncio.run(_amain(settings, settings.database_url or DEFAULT_LOCAL_URL))


if __name__ == "__main__":
    sys.exit(main())
