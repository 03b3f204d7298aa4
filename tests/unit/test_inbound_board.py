"""OperatorBoard (claims, first come first served, live overlay) and small inbound helpers.

The board is pure logic over an injected operator list: a fake loader stands in for Postgres and
a fake probe for Asterisk's endpoint state.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import pytest

from ivr.inbound.board import OperatorBoard
from ivr.inbound.plugin import operator_extension
from ivr.stack.render import ConfigError, OperatorEndpoint, validate_operator
from routing.distribution import OperatorView

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def view(ext: str, *, idle_minutes: float = 10, status: str = "available") -> OperatorView:
    return OperatorView(id=int(ext), extension=ext, name=f"op{ext}", department="sales", status=status,
                        last_call_end_at=NOW - timedelta(minutes=idle_minutes))


def board_with(views: list[OperatorView], busy_phones: set[str] = frozenset()) -> OperatorBoard:
    async def load(_dept: str) -> list[OperatorView]:
        return list(views)

    async def probe(ext: str) -> bool:
        return ext in busy_phones

    return OperatorBoard(load, probe)


async def test_claim_picks_longest_idle_and_never_the_same_operator_twice_at_once():
    board = board_with([view("101", idle_minutes=5), view("102", idle_minutes=30), view("103", idle_minutes=1)])
    first = await board.claim("sales", "call-a", strategy="longest_idle")
    second = await board.claim("sales", "call-b", strategy="longest_idle")
    assert first.extension == "102"
    assert second.extension == "101"  # 102 is ringing for call-a: ring-in-use off
    assert board.state("102").ringing_for == "call-a"


async def test_paused_and_excluded_operators_are_not_offered():
    board = board_with([view("101", status="paused"), view("102", status="logged_out"), view("103")])
    got = await board.claim("sales", "c1", strategy="longest_idle")
    assert got.extension == "103"
    await board.ring_ended("103", "c1", answered=False)
    assert await board.claim("sales", "c1", strategy="longest_idle", exclude={"103"}) is None


async def test_phone_busy_with_an_internal_call_is_skipped():
    board = board_with([view("101", idle_minutes=50), view("102", idle_minutes=10)], busy_phones={"101"})
    got = await board.claim("sales", "c1", strategy="longest_idle")
    assert got.extension == "102"
    assert board.state("101").ringing_for is None  # the reservation was released


async def test_wrapup_keeps_an_operator_out_until_it_ends():
    board = board_with([view("101")])
    got = await board.claim("sales", "c1", strategy="longest_idle")
    await board.ring_ended(got.extension, "c1", answered=True)
    await board.call_ended(got.extension, "c1", wrapup_seconds=0.3)
    assert await board.claim("sales", "c2", strategy="longest_idle") is None
    t0 = time.monotonic()
    again = await board.claim("sales", "c2", strategy="longest_idle", wait=3)
    assert again is not None and again.extension == "101"
    assert 0.1 < time.monotonic() - t0 < 2.0


async def test_waiting_calls_are_served_first_come_first_served():
    board = board_with([view("101")])
    holder = await board.claim("sales", "c0", strategy="longest_idle")
    await board.ring_ended(holder.extension, "c0", answered=True)
    order: list[str] = []

    async def wait_for_operator(call: str, since: float):
        got = await board.claim("sales", call, strategy="longest_idle", wait=5, since=since)
        order.append(call)
        await board.ring_ended(got.extension, call, answered=True)
        await board.call_ended(got.extension, call, wrapup_seconds=0)

    base = time.monotonic()
    # The later caller starts waiting first in wall time but arrived later (since): order is by arrival.
    late = asyncio.create_task(wait_for_operator("late", base + 1))
    await asyncio.sleep(0.05)
    early = asyncio.create_task(wait_for_operator("early", base))
    await asyncio.sleep(0.05)
    await board.call_ended("101", "c0", wrapup_seconds=0)
    await asyncio.wait_for(asyncio.gather(late, early), 5)
    assert order == ["early", "late"]


async def test_on_first_wait_is_called_once_when_nobody_is_free():
    board = board_with([view("101", status="paused")])
    calls = 0

    async def announce():
        nonlocal calls
        calls += 1

    assert await board.claim("sales", "c1", strategy="longest_idle", wait=0.3, on_first_wait=announce) is None
    assert calls == 1


async def test_database_down_keeps_the_last_operator_list():
    views = [view("101")]
    fail = False

    async def load(_dept):
        if fail:
            raise OSError("connection refused")
        return views

    board = OperatorBoard(load)
    assert (await board.views("sales"))[0].extension == "101"
    fail = True
    board.VIEWS_TTL = 0
    assert (await board.views("sales"))[0].extension == "101"


@pytest.mark.parametrize("name, ext", [
    ("PJSIP/201-0000000a", "201"), ("PJSIP/12345678-00000001", "12345678"), ("PJSIP/carrier-00000001", None),
    ("SIP/201-1", None), ("PJSIP/1-00000001", None), ("", None),
])
def test_operator_is_identified_by_the_endpoint_in_the_channel_name(name, ext):
    assert operator_extension(name) == ext


@pytest.mark.parametrize("name", ["Иван\nПетров", "Иван; drop", "[evil]", "a,b", "Ivan)", "x" * 61, "Ivan <1>"])
def test_operator_names_cannot_inject_config(name):
    with pytest.raises(ConfigError):
        validate_operator(OperatorEndpoint(extension="201", name=name, secret="s" * 20))


@pytest.mark.parametrize("field, value", [("extension", "20a"), ("extension", "1"), ("secret", "short"),
                                          ("contact", "sip:127.0.0.1:99999"), ("contact", "sip:evil;x=1:5060"),
                                          ("contact", "http://127.0.0.1:80")])
def test_operator_endpoint_fields_are_validated(field, value):
    values = dict(extension="201", name="Анна Смирнова", secret="s" * 20, contact=None)
    values[field] = value
    with pytest.raises(ConfigError):
        validate_operator(OperatorEndpoint(**values))


def test_a_valid_operator_renders_into_pjsip_and_dialplan(tmp_path):
    from ivr.config import Settings
    from ivr.stack.render import Directories, render_texts

    settings = Settings(ari_password="a" * 20, ami_secret="b" * 20)
    ops = [OperatorEndpoint(extension="201", name="Анна Смирнова", secret="S3cret-secret-1", contact="sip:127.0.0.1:20001")]
    texts = render_texts(settings, Directories.instance("unit", "/usr/lib/asterisk/modules"), ops)
    assert "[201]\ntype = endpoint" in texts["pjsip.conf"]
    assert "callerid = Анна Смирнова <201>" in texts["pjsip.conf"]
    assert "contact = sip:127.0.0.1:20001" in texts["pjsip.conf"]
    assert "exten => 201,1," in texts["extensions.conf"] and "exten => *45,1," in texts["extensions.conf"]
    # The operators' context never dials the carrier.
    operators_ctx = texts["extensions.conf"].split("[operators]")[1].split("\n[")[0]
    assert "PJSIP/carrier" not in operators_ctx and "carrier" not in operators_ctx
