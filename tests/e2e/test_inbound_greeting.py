"""Real SIP calls to the public number through real Asterisk, the real controller and Postgres."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.runner import fetch_health
from models.db import make_engine
from models.tables import Call
from tests.conftest import unique_mobile

pytestmark = pytest.mark.e2e


def wait_for_row(database_url: str, e164: str, *, ended: bool = True, timeout: float = 10.0) -> Call:
    engine = make_engine(database_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with Session(engine) as session:
                row = session.scalar(select(Call).where(Call.from_e164 == e164).order_by(Call.id.desc()).limit(1))
            if row is not None and (row.ended_at is not None or not ended):
                return row
            if time.monotonic() > deadline:
                raise AssertionError(f"no {'finished ' if ended else ''}call row from {e164} after {timeout}s: {row}")
            time.sleep(0.2)
    finally:
        engine.dispose()


def call_log(controller, call_uid: str) -> list[str]:
    return [line for line in controller.log_text().splitlines() if f"call_id={call_uid} " in line]


def number(settings) -> str:
    """The greeting self-test number (the public number itself routes to operators now)."""
    return "ivr-greeting"


async def test_dtmf_1_reaches_the_controller_and_lands_in_the_calls_row(controller, e2e_settings, phone):
    caller = unique_mobile()
    result = await phone(caller).call(number(e2e_settings), dtmf="1", dtmf_delay=1.0, hold_after=6)
    assert result.answered and result.status == 200
    assert result.hung_up_by_remote, "the IVR hangs up after thanking the caller"
    row = wait_for_row(e2e_settings.database_url, "+" + caller)
    assert (row.result, row.digits, row.hangup_by, row.direction.value) == ("digit", "1", "ivr", "inbound")
    assert row.to_number == number(e2e_settings)
    assert row.started_at <= row.answered_at <= row.ended_at
    lines = call_log(controller, row.call_uid)
    assert any("event=greeting_started" in l and "lang=ru_RU_f_IvrvoiceRU" in l for l in lines), lines
    assert any("event=digit_accepted digit=1" in l for l in lines), lines
    # Every line of the call carries its id; one line per event.
    assert len(lines) >= 5


async def test_greeting_really_plays_before_the_digit_wait(controller, e2e_settings, phone):
    caller = unique_mobile()
    await phone(caller).call(number(e2e_settings), hold_after=e2e_settings.digit_timeout + 4)
    row = wait_for_row(e2e_settings.database_url, "+" + caller)
    assert (row.result, row.digits) == ("no_input", None)
    lines = call_log(controller, row.call_uid)
    finished = next(l for l in lines if "event=greeting_finished" in l)
    assert "state=done" in finished, finished  # Asterisk found and played the Russian sounds
    stamps = {}
    for l in lines:
        m = re.search(r"event=(greeting_started|greeting_finished)", l)
        if m:
            stamps[m.group(1)] = l[:23]
    from datetime import datetime
    t0, t1 = (datetime.fromisoformat(stamps[k]) for k in ("greeting_started", "greeting_finished"))
    assert (t1 - t0).total_seconds() > 0.5, "a greeting that ends at once did not play"
    assert "during" not in (row.notes or "")


async def test_hangup_during_the_greeting_is_recorded(controller, e2e_settings, phone):
    caller = unique_mobile()
    result = await phone(caller).call(number(e2e_settings), hangup_after=0.5)
    assert result.answered and not result.hung_up_by_remote
    row = wait_for_row(e2e_settings.database_url, "+" + caller)
    assert (row.result, row.hangup_by) == ("caller_hangup", "caller")
    assert "caller hung up during greeting" in row.notes
    assert "Traceback" not in controller.log_text() and "level=error" not in controller.log_text()


async def test_star_and_hash_are_recorded_but_do_not_choose(controller, e2e_settings, phone):
    caller = unique_mobile()
    await phone(caller).call(number(e2e_settings), dtmf="*#", dtmf_delay=2.0,
                             hold_after=e2e_settings.digit_timeout + 4)
    row = wait_for_row(e2e_settings.database_url, "+" + caller)
    assert (row.result, row.digits) == ("invalid_input", "*#")


async def test_hostile_caller_id_is_answered_and_stored_safely(controller, e2e_settings, phone):
    caller = phone(from_header='"Robert\'); DROP TABLE calls;--" <sip:anonymous@127.0.0.1>')
    result = await caller.call(number(e2e_settings), dtmf="2", dtmf_delay=1.0, hold_after=5)
    assert result.answered
    engine = make_engine(e2e_settings.database_url)
    with Session(engine) as session:
        row = session.scalar(select(Call).where(Call.from_number == "anonymous").order_by(Call.id.desc()).limit(1))
    engine.dispose()
    assert row is not None and row.from_e164 is None and row.result == "digit"
    assert "DROP TABLE" in row.caller_name  # stored as data, harmlessly


async def test_controller_survives_websocket_shutdown_and_handles_the_next_call(
        controller, e2e_settings, asterisk, phone):
    before = (await fetch_health(e2e_settings))["ari"]["connections"]
    asterisk.cli("ari shutdown websocket sessions")
    deadline = time.monotonic() + 15
    while (await fetch_health(e2e_settings))["ari"]["connections"] == before:
        assert time.monotonic() < deadline, "controller did not reconnect"
        await asyncio.sleep(0.2)
    caller = unique_mobile()
    result = await phone(caller).call(number(e2e_settings), dtmf="1", dtmf_delay=1.0, hold_after=6)
    assert result.answered
    assert wait_for_row(e2e_settings.database_url, "+" + caller).result == "digit"
    assert "event=ari_websocket_closed" in controller.log_text()


async def test_call_in_progress_while_the_websocket_drops_is_still_hung_up(
        controller, e2e_settings, asterisk, phone):
    caller = unique_mobile()
    call = asyncio.create_task(phone(caller).call(number(e2e_settings), hold_after=20))
    # Poll in a thread: the sipp call runs on this event loop meanwhile.
    await asyncio.to_thread(wait_for_row, e2e_settings.database_url, "+" + caller, ended=False)
    await asyncio.sleep(0.5)
    asterisk.cli("ari shutdown websocket sessions")
    result = await call
    assert result.answered and result.hung_up_by_remote, "the controller must still hang the call up"
    assert result.talk_time < 15
    row = wait_for_row(e2e_settings.database_url, "+" + caller)
    assert (row.result, row.hangup_by) == ("no_input", "ivr")


async def test_tcp_reset_of_the_event_stream_mid_call(controller, e2e_settings, phone):
    """A hard reset (no close handshake), as a crashed proxy or a NAT timeout would cause."""
    import shutil
    import subprocess

    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) not installed")
    before = (await fetch_health(e2e_settings))["ari"]["connections"]
    caller = unique_mobile()
    call = asyncio.create_task(phone(caller).call(number(e2e_settings), dtmf="5", dtmf_delay=3.0, hold_after=6))
    await asyncio.to_thread(wait_for_row, e2e_settings.database_url, "+" + caller, ended=False)
    reset = subprocess.run(["ss", "-K", "dst", e2e_settings.bind_host, "dport", "=", str(e2e_settings.http_port)],
                           capture_output=True, text=True)
    assert reset.returncode == 0, reset.stderr
    result = await call
    assert result.answered and result.hung_up_by_remote
    row = await asyncio.to_thread(wait_for_row, e2e_settings.database_url, "+" + caller)
    # The key was pressed after the reset: it arrived on the new websocket (or, if it fell in
    # the gap, the call timed out) - either way the call was closed properly by the IVR.
    assert row.hangup_by == "ivr" and row.result in ("digit", "no_input")
    assert (await fetch_health(e2e_settings))["ari"]["connections"] > before
