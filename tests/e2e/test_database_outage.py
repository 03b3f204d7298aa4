"""Postgres dies (or was never there): calls are still answered and nothing is lost.

Its own module because it runs its own controller: two controllers on one ARI app would both
take the call.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from ivr.runner import ControllerProcess, fetch_health
from models.migrate import upgrade
from tests.conftest import drop_database, recreate_database, unique_mobile
from tests.e2e.test_inbound_greeting import number, wait_for_row

pytestmark = pytest.mark.e2e


async def test_dead_database_calls_still_answered_and_records_replayed(
        asterisk, e2e_settings, pg_server_url, phone, tmp_path):
    name = "ivr_test_dead_db"
    drop_database(pg_server_url, name)
    url = recreate_database(pg_server_url, name)
    drop_database(pg_server_url, name)  # the controller starts against a database that is gone
    settings = e2e_settings.with_overrides(database_url=url, state_dir=tmp_path)
    controller = ControllerProcess(settings, tmp_path / "controller.log").start()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                health = await fetch_health(settings)
                if health["ari"]["connected"]:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, controller.log_text()
            await asyncio.sleep(0.3)
        assert health["database"]["ok"] is False
        caller = unique_mobile()
        result = await phone(caller).call(number(settings), dtmf="1", dtmf_delay=1.0, hold_after=6)
        assert result.answered and result.hung_up_by_remote  # handled normally
        await asyncio.sleep(1)
        health = await fetch_health(settings)
        assert health["database"]["spooled"] >= 2 and health["database"]["spool_pending"] is True
        text = controller.log_text()
        assert "event=database_unreachable" in text and "event=call_record_spooled" in text
        assert "Traceback" not in text

        # The database comes back: the spooled call appears without anyone doing anything.
        recreate_database(pg_server_url, name)
        upgrade(url)
        row = wait_for_row(url, "+" + caller, timeout=20)
        assert (row.result, row.digits) == ("digit", "1")
    finally:
        controller.stop()
        drop_database(pg_server_url, name)
