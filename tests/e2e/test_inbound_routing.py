"""Inbound routing end to end: real Asterisk, the real controller, real SIP phones, real Postgres.

Operators are sipp answering phones (static contacts of their PJSIP endpoints, generated from
the operators table); callers are sipp phones calling the public number through the carrier
trunk from numbers of clients of each kind. The rules (tests/e2e/floor.py) are a short-timeout
copy of the company's rules applied to the database like an admin would.
"""

from __future__ import annotations

import pytest

from ivr.phones.sipp import SippCaller
from tests.conftest import unique_mobile
from tests.e2e.floor import attempts, call, call_row, public, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


async def test_unknown_caller_reaches_current_sales_and_gets_a_client_card(routed, e2e_settings, tmp_path):
    floor = routed
    phone = unique_mobile()
    before = floor.invites()
    result = await call(e2e_settings, tmp_path, phone, hold_after=4)
    assert result.answered
    row = await wait_for(lambda: call_row(floor, phone), what="call row")
    assert row.rule == "unknown_caller" and row.department_code == "current_sales"
    assert row.result == "answered" and row.extension in ("101", "102", "103")
    after = floor.invites()
    assert after[row.extension] == before[row.extension] + 1
    card = floor.sql("SELECT c.stage FROM clients c JOIN client_phones p ON p.client_id = c.id WHERE p.e164 = :p",
                     p="+" + phone)
    assert card and card[0].stage == "potential"


async def test_client_called_by_active_sales_manager_reaches_him_first(routed, e2e_settings, tmp_path):
    floor = routed
    phone = floor.add_client(full_name="Пётр Николаевич Сидоров", segment="wholesale")
    floor.sql("INSERT INTO contacts (client_id, operator_id, direction, at, result) SELECT p.client_id, o.id, "
              "'outbound', now() - interval '1 day', 'answered' FROM client_phones p, operators o "
              "WHERE p.e164 = :p AND o.extension = '201'", p="+" + phone)
    result = await call(e2e_settings, tmp_path, phone, hold_after=4)
    assert result.answered
    row = await wait_for(lambda: call_row(floor, phone), what="call row")
    assert row.rule == "called_back_by_active_sales" and row.extension == "201"
    trail = attempts(floor, row.call_uid)
    assert [(a.extension, a.step, a.outcome) for a in trail] == [("201", "active_sales", "answered")]
    # The client card was on the manager's phone: name and segment in the caller ID.
    invite = floor.phones["201"].calls[-1].invite
    assert "Сидоров" in invite and "опт" in invite


async def test_client_with_deals_reaches_assigned_operator(routed, e2e_settings, tmp_path):
    floor = routed
    phone = floor.add_client(full_name="ООО Ромашка Иванов", segment="small_wholesale", deals=3, assigned="302",
                             department="current_service")
    result = await call(e2e_settings, tmp_path, phone, hold_after=4)
    assert result.answered
    row = await wait_for(lambda: call_row(floor, phone), what="call row")
    assert row.rule == "client_with_deals" and row.extension == "302"


async def test_retail_client_reaches_retail_floor(routed, e2e_settings, tmp_path):
    floor = routed
    phone = floor.add_client(full_name="Розничный Покупатель", segment="retail")
    result = await call(e2e_settings, tmp_path, phone, hold_after=4)
    assert result.answered
    row = await wait_for(lambda: call_row(floor, phone), what="call row")
    assert row.rule == "known_by_segment" and row.department_code == "retail"
    assert row.extension in ("401", "402")


async def test_manager_who_does_not_react_escalates_with_violation_and_auto_pause(routed, e2e_settings, tmp_path):
    floor = routed
    floor.set_available("202")
    phone = floor.add_client(full_name="Клиент Активных Продаж", segment="wholesale")
    floor.sql("INSERT INTO contacts (client_id, operator_id, direction, at, result) SELECT p.client_id, o.id, "
              "'outbound', now() - interval '2 hours', 'answered' FROM client_phones p, operators o "
              "WHERE p.e164 = :p AND o.extension = '202'", p="+" + phone)
    # The caller stays on the line long enough for the 4 s standard and the department's turn.
    result = await call(e2e_settings, tmp_path, phone, hold_after=10, timeout=20)
    assert result.answered
    row = await wait_for(lambda: call_row(floor, phone), what="call row")
    trail = [(a.extension, a.step, a.outcome) for a in attempts(floor, row.call_uid)]
    assert trail[0] == ("202", "active_sales", "no_answer"), trail
    assert row.result == "answered" and row.extension == "201"  # the active-sales department took it
    violation = floor.sql("SELECT v.kind, v.standard_seconds, v.delay_seconds FROM violations v "
                          "JOIN operators o ON o.id = v.operator_id WHERE o.extension = '202' AND v.call_uid = :u",
                          u=row.call_uid)
    assert violation and violation[0].kind == "reaction" and violation[0].standard_seconds == 4
    assert violation[0].delay_seconds >= 3.5
    status = floor.sql("SELECT status, pause_reason FROM operators WHERE extension = '202'")[0]
    assert status.status == "paused" and status.pause_reason


async def test_paused_operator_rejoins_by_feature_code(routed, e2e_settings, tmp_path):
    floor = routed
    floor.sql("UPDATE operators SET status = 'paused', pause_reason = 'test' WHERE extension = '103'")
    secret = floor.sql("SELECT sip_secret FROM operators WHERE extension = '103'")[0].sip_secret
    phone = SippCaller(e2e_settings.bind_host, e2e_settings.sip_port, caller_id="103", workdir=tmp_path,
                       auth=("103", secret))
    result = await phone.call("*45", hold_after=4, timeout=5)
    assert result.answered
    status = await wait_for(lambda: floor.sql(
        "SELECT status FROM operators WHERE extension = '103' AND status = 'available'"), what="rejoin")
    assert status
    events = floor.sql("SELECT e.event, e.cause FROM operator_events e JOIN operators o ON o.id = e.operator_id "
                       "WHERE o.extension = '103' ORDER BY e.id DESC LIMIT 1")
    assert events[0].cause == "feature_code"
    # And *45 again pauses him.
    await phone.call("*45", hold_after=3, timeout=5)
    assert await wait_for(lambda: floor.sql(
        "SELECT 1 FROM operators WHERE extension = '103' AND status = 'paused'"), what="pause")
    floor.set_available("103")


async def test_wrong_password_cannot_use_feature_codes(routed, e2e_settings, tmp_path):
    floor = routed
    phone = SippCaller(e2e_settings.bind_host, e2e_settings.sip_port, caller_id="101", workdir=tmp_path,
                       auth=("101", "not-the-password-at-all"))
    result = await phone.call("*45", hold_after=1, timeout=5, raise_on_error=False)
    assert not result.answered
    assert floor.sql("SELECT status FROM operators WHERE extension = '101'")[0].status == "available"


async def test_hostile_caller_ids_are_routed_as_unknown(routed, e2e_settings, tmp_path):
    floor = routed
    hostile = [(None, None), ("'; DROP TABLE clients; --", "Robert'); DROP TABLE calls;--"), ("x" * 200, None),
               ("abc", "\u202eevil"), ("+7 (916) 12", None)]
    for caller_id, name in hostile:
        caller = SippCaller(e2e_settings.bind_host, e2e_settings.sip_port, caller_id=caller_id, caller_name=name,
                            workdir=tmp_path)
        result = await caller.call(public(e2e_settings), hold_after=3, timeout=10)
        assert result.answered, caller_id
    rows = await wait_for(lambda: [r for r in floor.sql(
        "SELECT rule, result, from_e164, client_id FROM calls WHERE direction = 'inbound' AND from_e164 IS NULL "
        "AND ended_at IS NOT NULL ORDER BY started_at DESC LIMIT 5")] if len(floor.sql(
        "SELECT 1 FROM calls WHERE from_e164 IS NULL AND ended_at IS NOT NULL")) >= 5 else None, what="5 rows")
    assert all(r.rule == "unknown_caller" and r.client_id is None for r in rows), rows
    assert all(r.result == "answered" for r in rows), rows  # each reached an operator
    assert floor.sql("SELECT count(*) AS n FROM clients")[0].n >= 1  # the tables are all still there


async def test_distribution_over_30_calls_is_fair(routed, e2e_settings, tmp_path):
    floor = routed
    floor.set_available("101", "102", "103")
    order: list[str] = []
    for i in range(30):
        phone = unique_mobile()
        result = await call(e2e_settings, tmp_path, phone, hold_after=1.5)
        assert result.answered, f"call {i} not answered"
        row = await wait_for(lambda: call_row(floor, phone), what=f"row of call {i}")
        order.append(row.extension)
    counts = {ext: order.count(ext) for ext in ("101", "102", "103")}
    assert min(counts.values()) >= 8, (counts, order)      # nobody starved
    repeats = sum(1 for a, b in zip(order, order[1:]) if a == b)
    assert repeats == 0, order                              # never the same operator twice in a row
