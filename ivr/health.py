"""The controller's own /health endpoint (loopback only): is each dependency really alive?"""

from __future__ import annotations

from typing import Awaitable, Callable

from aiohttp import web

HealthProbe = Callable[[], Awaitable[dict]]


class HealthServer:
    def __init__(self, host: str, port: int, probe: HealthProbe):
        self.host, self.port, self.probe = host, port, probe
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def _health(self, request: web.Request) -> web.Response:
        report = await self.probe()
        return web.json_response(report, status=200 if report.get("ok") else 503)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
