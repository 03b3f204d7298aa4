"""Live wallboard push: Postgres NOTIFY -> one fresh snapshot -> every SSE client.

Path of a change: the controller writes a row (call_attempts when it starts ringing an operator,
calls when he answers, operators on a pause, ...) -> the statement trigger of migration 0009
sends ``NOTIFY ivr_floor, '<table>'`` at commit -> this hub's LISTEN connection (psycopg 3,
``conn.notifies()``) wakes -> after ``DEBOUNCE`` seconds (a burst of notifications is one
recompute) the snapshot is computed once per department filter in use -> queued to each
subscribed client -> written as ``event: snapshot`` on /wallboard/events.

If the LISTEN connection cannot be opened (or drops) the hub polls: it recomputes every
``POLL`` seconds and pushes only what changed, and keeps trying to LISTEN again. Besides, every
``TICK`` seconds it recomputes anyway and pushes if something changed with time alone (a wrap-up
ended). Clients get a comment line every ``HEARTBEAT`` seconds (proxies keep the stream open, a
gone browser is noticed) and are removed when their stream ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from aiohttp import web

log = logging.getLogger("ivr.web.floor_events")

CHANNEL = "ivr_floor"

SnapshotFn = Callable[[int | None], Awaitable[dict]]


@dataclass(eq=False)
class Client:
    department_id: int | None
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=4))

    def offer(self, data: str | None) -> None:
        """Queue ``data``; a slow client loses its oldest snapshot, never blocks the others."""
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
        self.queue.put_nowait(data)


class FloorHub:
    DEBOUNCE = 0.1
    HEARTBEAT = 15.0
    POLL = 1.0
    TICK = 5.0
    RECONNECT = 5.0

    def __init__(self, snapshot: SnapshotFn, engine: Callable[[], object]):
        self._snapshot = snapshot
        self._engine = engine
        self.clients: set[Client] = set()
        self._dirty = asyncio.Event()
        self._notified = False
        self._last: dict[int | None, str] = {}
        self._tasks: list[asyncio.Task] = []
        self.mode = "starting"          # listen / poll
        self.notifications = 0
        self.pushes = 0

    # --- life ------------------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._listen(), name="floor-listen"),
                       asyncio.create_task(self._push(), name="floor-push")]

    async def close_clients(self, _app=None) -> None:
        for c in list(self.clients):
            c.offer(None)

    async def stop(self) -> None:
        await self.close_clients()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []

    def subscribe(self, department_id: int | None) -> Client:
        c = Client(department_id)
        self.clients.add(c)
        return c

    def unsubscribe(self, client: Client) -> None:
        self.clients.discard(client)

    async def snapshot(self, department_id: int | None) -> dict:
        return await self._snapshot(department_id)

    def poke(self, notified: bool = True) -> None:
        self._notified = self._notified or notified
        self._dirty.set()

    # --- LISTEN ----------------------------------------------------------------------------
    def _dsn(self) -> str:
        url = self._engine().url.set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    async def _listen(self) -> None:
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._dsn(), autocommit=True,
                                                                 connect_timeout=3) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if self.mode != "listen":
                        log.info("event=floor_listen channel=%s", CHANNEL)
                    self.mode = "listen"
                    self.poke()                       # whatever changed while we were not listening
                    async for _note in conn.notifies():
                        self.notifications += 1
                        self.poke()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.mode != "poll":
                    log.warning("event=floor_listen_failed fallback=poll reason=%r", str(exc)[:200])
                self.mode = "poll"
            # Poll until the next try to LISTEN.
            loop = asyncio.get_running_loop()
            until = loop.time() + self.RECONNECT
            while loop.time() < until:
                self.poke(notified=False)
                await asyncio.sleep(self.POLL)

    # --- fan-out ---------------------------------------------------------------------------
    async def _push(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.TICK):
                    await self._dirty.wait()
            except TimeoutError:
                pass
            if self._notified:
                await asyncio.sleep(self.DEBOUNCE)    # the rest of the burst joins this recompute
            notified, self._notified = self._notified, False
            self._dirty.clear()
            if not self.clients:
                self._last.clear()
                continue
            for dep in {c.department_id for c in self.clients}:
                try:
                    snap = await self._snapshot(dep)
                except Exception as exc:  # database away: clients keep their last picture
                    log.warning("event=floor_snapshot_failed reason=%r", str(exc)[:200])
                    continue
                key = json.dumps(snap.get("departments"), sort_keys=True)
                if not notified and self._last.get(dep) == key:
                    continue
                self._last[dep] = key
                data = json.dumps(snap)
                self.pushes += 1
                for c in list(self.clients):
                    if c.department_id == dep:
                        c.offer(data)


def _event(data: str) -> bytes:
    return f"event: snapshot\ndata: {data}\n\n".encode()


async def sse_stream(request: web.Request, hub: FloorHub, department_id: int | None) -> web.StreamResponse:
    """text/event-stream: the snapshot at once, then one per change; heartbeat comments."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                       "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    client = hub.subscribe(department_id)
    try:
        await resp.write(b"retry: 2000\n\n")
        await resp.write(_event(json.dumps(await hub.snapshot(department_id))))
        while True:
            try:
                async with asyncio.timeout(hub.HEARTBEAT):
                    data = await client.queue.get()
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            if data is None:             # the app is shutting down
                break
            await resp.write(_event(data))
    except (ConnectionResetError, ConnectionError):
        pass                              # the browser went away
    finally:
        hub.unsubscribe(client)
    return resp
