"""The ARI event websocket, kept alive by a supervisor.

Asterisk does not buffer events while no websocket is connected and does not replay
StasisStart, so after every (re)connect the supervisor lists live channels and lets the
dispatcher reconcile: calls that ended meanwhile are closed, calls left in our app are adopted.
Connection failures are logged as one line each (no stack traces) with a growing back-off;
wrong credentials are fatal, because retrying cannot fix them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass, field
from typing import Callable

import aiohttp

from .client import AriAuthError, AriClient, AriError, AriUnavailable
from .dispatch import CallDispatcher
from .events import AriEvent

log = logging.getLogger("ivr.ari.stream")


@dataclass
class Backoff:
    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    _next: float = field(default=0.0, init=False)

    def reset(self) -> None:
        self._next = 0.0

    def next_delay(self) -> float:
        self._next = self.initial if self._next == 0.0 else min(self._next * self.factor, self.maximum)
        return self._next * (1 + random.uniform(-self.jitter, self.jitter))


class AriEventStream:
    """Connects ``/ari/events?app=APP``, feeds the dispatcher, reconnects forever."""

    def __init__(
        self,
        client: AriClient,
        app: str,
        dispatcher: CallDispatcher,
        *,
        backoff: Backoff | None = None,
        on_event: Callable[[AriEvent], None] | None = None,
    ):
        self.client = client
        self.app = app
        self.dispatcher = dispatcher
        self.backoff = backoff or Backoff()
        self.on_event = on_event
        self.connected = asyncio.Event()
        self.connections = 0  # how many times we connected (1 + reconnects)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._stopping = False
        self._reconcile_task: asyncio.Task[None] | None = None

    @property
    def ws_url(self) -> str:
        return self.client.base_url.replace("http://", "ws://").replace("https://", "wss://") + "/ari/events"

    async def run(self) -> None:
        """Run until stop(); raises AriAuthError on wrong credentials."""
        while not self._stopping:
            try:
                await self._connect_and_read()
            except AriAuthError:
                raise
            except (aiohttp.ClientError, OSError, AriUnavailable, TimeoutError) as exc:
                if self._stopping:
                    break
                delay = self.backoff.next_delay()
                log.warning(
                    "event=ari_unreachable url=%s reason=%r retry_in=%.1fs", self.ws_url, _reason(exc), delay
                )
                await asyncio.sleep(delay)
                continue
            if self._stopping:
                break
            delay = self.backoff.next_delay()
            log.warning("event=ari_websocket_closed url=%s reconnect_in=%.1fs", self.ws_url, delay)
            await asyncio.sleep(delay)

    async def _connect_and_read(self) -> None:
        try:
            ws = await self.client.session.ws_connect(
                self.ws_url,
                params={"app": self.app, "subscribeAll": "false"},
                headers={"Authorization": self.client.auth_header},
                heartbeat=10.0,
                autoping=True,
                max_msg_size=0,
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise AriAuthError("GET", "/events", exc.status, "wrong ARI user or password") from None
            raise
        self._ws = ws
        self.connections += 1
        self.backoff.reset()
        self.connected.set()
        log.info("event=ari_connected url=%s app=%s connection=%d", self.ws_url, self.app, self.connections)
        self._reconcile_task = asyncio.create_task(self._reconcile())
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    try:
                        data = json.loads(msg.data)
                    except ValueError:
                        log.warning("event=ari_bad_json size=%d", len(msg.data))
                        continue
                    event = AriEvent(data.get("type", ""), data)
                    if self.on_event is not None:
                        self.on_event(event)
                    self.dispatcher.dispatch(event)
                elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    break
        finally:
            self.connected.clear()
            self._ws = None
            if not ws.closed:
                await ws.close()

    async def _reconcile(self) -> None:
        try:
            channels = await self.client.channels()
        except (AriError, AriUnavailable) as exc:
            log.warning("event=reconcile_failed reason=%r", _reason(exc))
            return
        gone, recovered = self.dispatcher.reconcile(channels)
        log.info("event=reconciled live_channels=%d gone=%d recovered=%d", len(channels), gone, recovered)

    async def stop(self) -> None:
        self._stopping = True
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._reconcile_task is not None:
            self._reconcile_task.cancel()


def _reason(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return text if len(text) < 200 else text[:197] + "..."
