"""The database dies while the controller is routing: callers still reach the default department.

Its own module and its own controller, which reaches Postgres through a proxy the test cuts.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from ivr.runner import ControllerProcess, fetch_health
from tests.conftest import unique_mobile
from tests.e2e.floor import call, call_row, wait_for
from tests.e2e.tcp_proxy import CuttableProxy

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


def via_proxy(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


async def test_dead_database_mid_day_routes_to_default_department(floor, e2e_settings, database_url, tmp_path):
    parts = urlsplit(database_url)
    proxy = await CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    settings = e2e_settings.with_overrides(database_url=via_proxy(database_url, proxy.port), state_dir=tmp_path)
    controller = ControllerProcess(settings, tmp_path / "controller.log").start()
    try:
        await asyncio.to_thread(controller.wait_healthy)
        # A normal call first: the controller reads the current-sales operators.
        first = unique_mobile()
        assert (await call(settings, tmp_path, first, hold_after=3)).answered
        row = await wait_for(lambda: call_row(floor, first), what="first call row")
        assert row.extension in ("101", "102", "103")

        # A client who would normally go to his assigned operator in current service...
        client = floor.add_client(full_name="Клиент С Договором", segment="wholesale", deals=2, assigned="301",
                                  department="current_service")
        invites = floor.invites()
        await proxy.cut()  # ...calls while the database is gone.
        t0 = time.monotonic()
        result = await call(settings, tmp_path, client, hold_after=4, timeout=15)
        assert result.answered
        after = floor.invites()
        rang = [ext for ext in after if after[ext] > invites[ext]]
        assert rang and set(rang) <= {"101", "102", "103"}, rang  # the default department took it
        assert time.monotonic() - t0 < 20
        health = await fetch_health(settings)
        assert health["database"]["ok"] is False

        await proxy.restore()
        # The spooled call row arrives when the database is back, marked degraded.
        row = await wait_for(lambda: call_row(floor, client), timeout=30, what="replayed call row")
        assert row.rule == "degraded_default" and row.department_code == "current_sales"
        assert row.result == "answered" and row.extension in ("101", "102", "103")
        degraded = floor.sql("SELECT degraded FROM calls WHERE call_uid = :u", u=row.call_uid)[0].degraded
        assert degraded is True
        text = controller.log_text()
        assert "event=lookup_degraded" in text and "Traceback" not in text
    finally:
        controller.stop()
        await proxy.stop()
