"""FastAGI server on loopback, via panoramisk.fast_agi.

Routes must be ``async def`` (panoramisk 1.4 wraps plain functions with asyncio.coroutine,
which Python 3.11 removed). Later issues add routes (e.g. caller lookup for the dialplan);
the foundation ships ``selftest``, which the health check and tests drive end to end:
dialplan -> AGI -> controller -> channel variable -> dialplan.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from panoramisk.fast_agi import Application, Request

log = logging.getLogger("ivr.agi")

Route = Callable[[Request], Awaitable[None]]


class AgiServer:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.app = Application()
        self._server: asyncio.base_events.Server | None = None
        self.requests = 0
        self.add_route("selftest", self._selftest)

    def add_route(self, path: str, handler: Route) -> None:
        async def counted(request: Request) -> None:
            self.requests += 1
            channel = request.headers.get("agi_channel", "?")
            log.info("event=agi_request route=%s channel=%s", path, channel)
            await handler(request)

        self.app.add_route(path, counted)

    async def _selftest(self, request: Request) -> None:
        await request.send_command('SET VARIABLE IVR_AGI_RESULT "ok"')

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Our own header reader: panoramisk's spins forever on a connection closed before
        the blank line. Headers are bounded in size and time; unknown routes get HANGUP-free
        refusal (the dialplan goes on and sees AGISTATUS=FAILURE)."""
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\n\n"), timeout=5.0)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            log.warning("event=agi_bad_request peer=%s", writer.get_extra_info("peername"))
            writer.close()
            return
        headers = dict(
            line.split(": ", 1) for line in raw[:-2].decode("utf-8", "replace").split("\n") if ": " in line
        )
        script = headers.get("agi_network_script", "")
        route = self.app._route.get(script)
        try:
            if route is None:
                log.warning("event=agi_unknown_route route=%r", script[:80])
                return
            await route(Request(app=self.app, headers=headers, reader=reader, writer=writer))
        except Exception:
            log.exception("event=agi_route_failed route=%s", script)
        finally:
            writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=16384)
        log.info("event=agi_listening address=%s:%d", self.host, self.port)

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
