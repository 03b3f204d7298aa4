"""Asterisk restarts under a running controller: ARI and AMI come back by themselves."""

from __future__ import annotations

import asyncio
import time

import pytest

from ivr.runner import fetch_health
from tests.conftest import unique_mobile
from tests.e2e.test_inbound_greeting import number, wait_for_row

pytestmark = pytest.mark.e2e


async def test_controller_reconnects_after_asterisk_restart(controller, asterisk, e2e_settings, phone):
    asterisk.stop()
    await asyncio.sleep(2)
    health = await fetch_health(e2e_settings)
    assert health["ok"] is False and health["ari"]["connected"] is False
    asterisk.start()
    deadline = time.monotonic() + 40
    while not (health := await fetch_health(e2e_settings))["ok"]:
        assert time.monotonic() < deadline, f"not healthy after Asterisk restart: {health}"
        await asyncio.sleep(0.5)
    caller = unique_mobile()
    result = await phone(caller).call(number(e2e_settings), dtmf="1", dtmf_delay=1.0, hold_after=6)
    assert result.answered
    assert wait_for_row(e2e_settings.database_url, "+" + caller).result == "digit"
    text = controller.log_text()
    assert "event=ari_unreachable" in text or "event=ari_websocket_closed" in text
    assert "Traceback" not in text
