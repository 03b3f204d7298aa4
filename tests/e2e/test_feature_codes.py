"""Operators' feature codes end to end: *69 call the last caller back, *2 transfer.

Real Asterisk, real controller, sipp phones: operators are answering phones (static contacts),
the far end behind the outbound trunk is a sipp phone on ``carrier_port``, feature codes are
dialled by an authenticated operator phone (``SippCaller(auth=(ext, secret))``).

Run (own Asterisk and database):
    IVR_TEST_PORT_OFFSET=1100 IVR_TEST_DB=ivr_test_features \\
        .cache/venv/bin/python -m pytest tests/e2e/test_feature_codes.py
"""

from __future__ import annotations

import asyncio

import pytest

from ivr.phones.sipp import SippAnswerer, SippCaller
from tests.conftest import unique_mobile
from tests.e2e.floor import call, call_row, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


def operator_phone(floor, settings, tmp_path, extension: str) -> SippCaller:
    secret = floor.sql("SELECT sip_secret FROM operators WHERE extension = :e", e=extension)[0].sip_secret
    return SippCaller(settings.bind_host, settings.sip_port, caller_id=extension, workdir=tmp_path,
                      auth=(extension, secret))


def callback_row(floor):
    rows = floor.sql("SELECT c.direction, c.flow, c.result, c.from_number, c.to_number, c.talk_seconds, c.client_id, "
                     "c.ended_at, c.notes, o.extension FROM calls c "
                     "LEFT JOIN operators o ON o.id = c.answered_by_operator_id "
                     "WHERE c.flow = 'operator_callback' ORDER BY c.started_at DESC LIMIT 1")
    return rows[0] if rows and rows[0].ended_at else None


async def test_callback_without_history_is_announced_and_hung_up(routed, e2e_settings, tmp_path):
    floor = routed
    far = await SippAnswerer(listen_port=e2e_settings.carrier_port, mode="answer", hold=5, workdir=tmp_path).start()
    try:
        # 402 (the retail consultant) was never rung for a customer in this module.
        result = await operator_phone(floor, e2e_settings, tmp_path, "402").call("*69", hold_after=15, timeout=5)
        assert result.answered and result.hung_up_by_remote  # «не могу перезвонить», then hung up
        await asyncio.sleep(1)
        assert far.invites == 0  # nothing went to the trunk
        assert callback_row(floor) is None
    finally:
        await far.stop()


async def test_callback_rings_the_last_caller_through_the_trunk_and_bridges(routed, e2e_settings, tmp_path):
    floor = routed
    floor.set_available("101", "102", "103")
    phone = unique_mobile()
    assert (await call(e2e_settings, tmp_path, phone, hold_after=3)).answered
    inbound = await wait_for(lambda: call_row(floor, phone), what="inbound call row")
    operator = inbound.extension
    assert operator in ("101", "102", "103") and inbound.result == "answered"
    client_id = floor.sql("SELECT client_id FROM client_phones WHERE e164 = :p", p="+" + phone)[0].client_id
    far = await SippAnswerer(listen_port=e2e_settings.carrier_port, mode="answer", hold=30, workdir=tmp_path).start()
    try:
        result = await operator_phone(floor, e2e_settings, tmp_path, operator).call("*69", hold_after=14, timeout=5)
        assert result.answered
        assert not result.hung_up_by_remote  # bridged until the operator hung up
        assert far.invites == 1
        invite = far.calls[0]
        assert phone in invite.request_uri  # the number from the database, through the trunk
        assert e2e_settings.public_number.lstrip("+") in invite.from_  # the company's number as caller ID
        assert invite.answered
        await wait_for(lambda: far.calls[0].remote_bye, what="far end hung up by the controller")
        row = await wait_for(lambda: callback_row(floor), what="callback call row")
        assert (row.direction, row.result, row.extension) == ("outbound", "answered", operator)
        assert row.to_number == "+" + phone and row.client_id == client_id
        assert row.talk_seconds and row.talk_seconds > 1
        contact = floor.sql("SELECT direction, result, o.extension FROM contacts c JOIN operators o "
                            "ON o.id = c.operator_id WHERE c.client_id = :c AND c.direction = 'outbound'",
                            c=client_id)
        assert contact and contact[0].extension == operator and contact[0].result == "called_back"
    finally:
        await far.stop()


async def test_transfer_code_moves_the_caller_to_a_colleague(routed, e2e_settings, database_url, tmp_path):
    from ivr.stack.operators import sync_operators

    floor = routed
    # 302 answers and presses *2 301 # on his keypad after 2 s.
    transferring = await SippAnswerer(mode="answer", hold=20, dtmf="*2301#", dtmf_delay=2.0, workdir=tmp_path).start()
    old_contact = floor.phones["302"].uri
    floor.sql("UPDATE operators SET sip_contact = :c WHERE extension = '302'", c=transferring.uri)
    await asyncio.to_thread(sync_operators, e2e_settings, database_url)
    try:
        floor.set_available("301", "302")
        colleague_before = floor.phones["301"].invites
        phone = floor.add_client(full_name="Клиент Для Перевода Кнопками", segment="wholesale", deals=1,
                                 assigned="302", department="current_service")
        result = await call(e2e_settings, tmp_path, phone, hold_after=20)
        assert result.answered
        assert transferring.invites == 1
        await floor.phones["301"].wait_for_calls(colleague_before + 1, timeout=10)  # the colleague rang
        row = await wait_for(lambda: call_row(floor, phone), timeout=30, what="call row")
        assert row.extension == "302" and row.result == "transferred"
        notes = floor.sql("SELECT notes FROM calls WHERE call_uid = :u", u=row.call_uid)[0].notes
        assert "transferred by 302 to 301" in notes
        trail = [(a.extension, a.step, a.outcome) for a in floor.sql(
            "SELECT extension, step, outcome FROM call_attempts WHERE call_uid = :u ORDER BY id", u=row.call_uid)]
        assert trail[0][0] == "302" and trail[0][2] == "answered"
        assert ("301", "transfer", "answered") in trail
        assert transferring.calls[0].remote_bye  # the transferring operator's leg was released
        # The colleague took the caller: *69 from 301 now calls this client back.
        last = floor.sql("SELECT c.from_e164 FROM call_attempts a JOIN calls c ON c.call_uid = a.call_uid "
                         "JOIN operators o ON o.id = a.operator_id WHERE o.extension = '301' "
                         "ORDER BY a.started_at DESC LIMIT 1")
        assert last[0].from_e164 == "+" + phone
    finally:
        floor.sql("UPDATE operators SET sip_contact = :c WHERE extension = '302'", c=old_contact)
        await asyncio.to_thread(sync_operators, e2e_settings, database_url)
        await transferring.stop()


async def test_transfer_code_dialled_alone_is_refused_politely(routed, e2e_settings, tmp_path):
    floor = routed
    result = await operator_phone(floor, e2e_settings, tmp_path, "101").call("*2", hold_after=10, timeout=5)
    assert result.answered and result.hung_up_by_remote  # «трансфер... неверный номер»


async def test_transfer_to_an_unknown_extension_keeps_the_caller_with_the_operator(routed, e2e_settings,
                                                                                  database_url, tmp_path):
    from ivr.stack.operators import sync_operators

    floor = routed
    # 302 presses *2 999 # (nobody has 999): he is told «неверный номер» and keeps the caller.
    transferring = await SippAnswerer(mode="answer", hold=6, dtmf="*2999#", dtmf_delay=1.5, workdir=tmp_path).start()
    old_contact = floor.phones["302"].uri
    floor.sql("UPDATE operators SET sip_contact = :c WHERE extension = '302'", c=transferring.uri)
    await asyncio.to_thread(sync_operators, e2e_settings, database_url)
    try:
        floor.set_available("301", "302")
        before = floor.invites()
        phone = floor.add_client(full_name="Клиент С Неверным Переводом", segment="wholesale", deals=1,
                                 assigned="302", department="current_service")
        assert (await call(e2e_settings, tmp_path, phone, hold_after=15)).answered
        row = await wait_for(lambda: call_row(floor, phone), timeout=30, what="call row")
        assert row.extension == "302" and row.result == "answered"
        assert row.talk_seconds > 5  # the operator kept talking until his phone hung up
        trail = [(a.extension, a.step) for a in floor.sql(
            "SELECT extension, step FROM call_attempts WHERE call_uid = :u ORDER BY id", u=row.call_uid)]
        assert not [t for t in trail if t[1] == "transfer"]
        assert floor.invites() == before  # no other phone rang
    finally:
        floor.sql("UPDATE operators SET sip_contact = :c WHERE extension = '302'", c=old_contact)
        await asyncio.to_thread(sync_operators, e2e_settings, database_url)
        await transferring.stop()


async def test_dialplan_check_verifies_the_feature_codes(routed, e2e_settings, database_url):
    """*69 and *2 are in [operators] and reach Stasis; `ivr dialplan check` fails without them."""
    from ivr.dialplan.apply import expectations, render_live
    from ivr.dialplan.check import check_files
    from ivr.stack.render import FEATURE_CODES

    assert {"*69", "*2"} <= set(FEATURE_CODES)
    files, _ = render_live(e2e_settings, database_url)
    expect = expectations(e2e_settings, files)
    assert {"*69", "*2"} <= set(expect.feature_codes)
    result = await asyncio.to_thread(check_files, e2e_settings, files, expect)
    assert result.ok, result.problems
    # The same file set without *69: refused by the check.
    text = files["extensions.conf"]
    start = text.index("exten => *69,")
    broken = dict(files, **{"extensions.conf": text[:start] + text[start:].split("\n", 3)[3]})
    result = await asyncio.to_thread(check_files, e2e_settings, broken, expect)
    assert not result.ok and any("*69" in p for p in result.problems), result.problems
