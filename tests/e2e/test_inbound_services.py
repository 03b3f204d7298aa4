"""Summon a manager to the sales floor, after-hours calls, everyone busy: end to end.

Its own module (own floor, own controller) so the pauses and rule changes here do not disturb
the routing tests.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from ivr.phones.sipp import SippCaller
from tests.conftest import unique_mobile
from tests.e2e.floor import RULES, _apply_rules, call, call_row, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

SUMMON_CONFIRM_SECONDS = 0.15 * 60  # RULES: summon.confirm_minutes


def operator_phone(floor, settings, tmp_path, extension: str) -> SippCaller:
    secret = floor.sql("SELECT sip_secret FROM operators WHERE extension = :e", e=extension)[0].sip_secret
    return SippCaller(settings.bind_host, settings.sip_port, caller_id=extension, workdir=tmp_path,
                      auth=(extension, secret))


def latest_summon(floor):
    rows = floor.sql("SELECT s.id, s.outcome, m.extension AS manager, c.extension AS consultant, s.confirmed_at, "
                     "s.deadline_at FROM summons s LEFT JOIN operators m ON m.id = s.manager_id "
                     "LEFT JOIN operators c ON c.id = s.consultant_id ORDER BY s.id DESC LIMIT 1")
    return rows[0] if rows else None


async def test_summon_confirmed_in_time(routed, e2e_settings, tmp_path):
    floor = routed
    floor.set_available("101", "102", "103")
    before = {ext: floor.phones[ext].invites for ext in ("101", "102", "103")}
    consultant = operator_phone(floor, e2e_settings, tmp_path, "402")
    result = await consultant.call("*77", hold_after=8, timeout=5)
    assert result.answered
    summon = await wait_for(lambda: (s := latest_summon(floor)) and s.manager and s, what="summon with manager")
    assert summon.consultant == "402" and summon.outcome == "pending" and summon.manager in before
    assert floor.phones[summon.manager].invites == before[summon.manager] + 1  # the manager's phone rang
    # He comes and confirms with *78 from his phone.
    confirm = await operator_phone(floor, e2e_settings, tmp_path, summon.manager).call("*78", hold_after=3, timeout=5)
    assert confirm.answered
    done = await wait_for(lambda: (s := latest_summon(floor)) and s.outcome == "confirmed" and s, what="confirmed")
    assert done.confirmed_at is not None
    await asyncio.sleep(SUMMON_CONFIRM_SECONDS - 3)
    assert latest_summon(floor).outcome == "confirmed"
    assert not floor.sql("SELECT 1 FROM violations WHERE kind = 'summon'")


async def test_summon_not_confirmed_is_a_violation_and_the_consultant_is_told(routed, e2e_settings, tmp_path):
    floor = routed
    consultant_phone = floor.phones["402"]
    invites_before = consultant_phone.invites
    result = await operator_phone(floor, e2e_settings, tmp_path, "402").call("*77", hold_after=8, timeout=5)
    assert result.answered
    summon = await wait_for(lambda: (s := latest_summon(floor)) and s.manager and s, what="summon with manager")
    missed = await wait_for(lambda: (s := latest_summon(floor)) and s.outcome == "missed" and s,
                            timeout=SUMMON_CONFIRM_SECONDS + 10, what="summon missed")
    violation = floor.sql("SELECT o.extension, v.standard_seconds FROM violations v JOIN operators o "
                          "ON o.id = v.operator_id WHERE v.kind = 'summon'")
    assert violation and violation[0].extension == summon.manager == missed.manager
    assert violation[0].standard_seconds == pytest.approx(SUMMON_CONFIRM_SECONDS)
    # The consultant's phone is called back: «извините, номер не отвечает».
    await consultant_phone.wait_for_calls(invites_before + 1, timeout=10)
    notice = consultant_phone.calls[-1]
    assert notice.answered


async def test_summon_with_no_manager_free_is_told_at_once(routed, e2e_settings, tmp_path):
    floor = routed
    floor.sql("UPDATE operators SET status = 'paused', pause_reason = 'обед' "
              "WHERE extension IN ('101', '102', '103')")
    try:
        result = await operator_phone(floor, e2e_settings, tmp_path, "402").call("*77", hold_after=20, timeout=5)
        assert result.answered and result.hung_up_by_remote
        summon = await wait_for(lambda: (s := latest_summon(floor)) and s.outcome == "no_manager" and s,
                                what="no_manager")
        assert summon.manager is None
    finally:
        floor.set_available("101", "102", "103")


async def test_after_hours_call_gets_message_and_callback_request(routed, e2e_settings, database_url, tmp_path):
    floor = routed
    today = datetime.now(ZoneInfo("Europe/Moscow")).date().isoformat()
    closed = RULES.replace('retail: {name: "Розничный зал", ', f'retail: {{name: "Розничный зал", closed_dates: [{today}], ')
    assert closed != RULES
    await asyncio.to_thread(_apply_rules, database_url, closed)
    try:
        await asyncio.sleep(1.5)  # the controller re-reads the active version at most once a second
        phone = floor.add_client(full_name="Вечерний Покупатель", segment="retail")
        before = floor.phones["401"].invites + floor.phones["402"].invites
        result = await call(e2e_settings, tmp_path, phone, hold_after=15)
        assert result.answered and result.hung_up_by_remote  # message, then the IVR hangs up
        row = await wait_for(lambda: call_row(floor, phone), what="call row")
        assert row.result == "after_hours" and row.department_code == "retail"
        assert floor.phones["401"].invites + floor.phones["402"].invites == before  # nobody rang
        request = floor.sql("SELECT reason, requests FROM callback_requests WHERE e164 = :p", p="+" + phone)
        assert request and request[0].reason == "after_hours"
        # Calling again does not duplicate the request.
        await call(e2e_settings, tmp_path, phone, hold_after=15)
        await wait_for(lambda: floor.sql("SELECT 1 FROM callback_requests WHERE e164 = :p AND requests = 2",
                                         p="+" + phone), what="second request counted")
        assert len(floor.sql("SELECT 1 FROM callback_requests WHERE e164 = :p", p="+" + phone)) == 1
    finally:
        await asyncio.to_thread(_apply_rules, database_url, RULES)
        await asyncio.sleep(1.5)


async def test_everyone_paused_gives_message_then_callback_request(routed, e2e_settings, tmp_path):
    floor = routed
    floor.sql("UPDATE operators SET status = 'paused', pause_reason = 'собрание' "
              "WHERE extension IN ('101', '102', '103', '301', '302')")
    try:
        phone = unique_mobile()
        result = await call(e2e_settings, tmp_path, phone, hold_after=40, timeout=10)
        assert result.answered and result.hung_up_by_remote
        row = await wait_for(lambda: call_row(floor, phone), what="call row")
        assert row.result == "callback_requested" and row.extension is None
        request = floor.sql("SELECT reason FROM callback_requests WHERE e164 = :p", p="+" + phone)
        assert request and request[0].reason == "all_busy"
        assert not floor.sql("SELECT 1 FROM call_attempts WHERE call_uid = :u", u=row.call_uid)
    finally:
        floor.set_available("101", "102", "103", "301", "302")


async def test_paused_operator_is_never_rung_until_he_rejoins(routed, e2e_settings, tmp_path):
    floor = routed
    floor.sql("UPDATE operators SET status = 'paused', pause_reason = 'перерыв' WHERE extension IN ('101', '102')")
    try:
        before = {ext: floor.phones[ext].invites for ext in ("101", "102", "103")}
        for _ in range(3):
            phone = unique_mobile()
            assert (await call(e2e_settings, tmp_path, phone, hold_after=3)).answered
            row = await wait_for(lambda: call_row(floor, phone), what="call row")
            assert row.extension == "103"
        assert floor.phones["101"].invites == before["101"] and floor.phones["102"].invites == before["102"]
    finally:
        floor.set_available("101", "102")


MENU_RULES = RULES.replace('''  - name: called_back_by_active_sales''', '''  - name: delivery_to_sales_operator
    when: {topic: [delivery, warehouse]}
    route: {to: client_operator}
  - name: documents_to_clerk
    when: {topic: documents}
    route: {department: documents}
  - name: called_back_by_active_sales''').replace('''  - name: known_by_segment
    when: {known: true}
    route: {to: segment_department}''', '''  - name: known_by_segment
    when: {known: true}
    route: {to: segment_department}
    menu: {prompt: [vm-press, digits/1, vm-press, digits/2, vm-press, digits/3],
           options: {"1": purchase, "2": documents, "3": delivery}, timeout: 4, default: purchase}''')


async def test_topic_menu_sends_a_delivery_question_to_the_clients_sales_operator(routed, e2e_settings,
                                                                                 database_url, tmp_path):
    floor = routed
    assert MENU_RULES != RULES
    await asyncio.to_thread(_apply_rules, database_url, MENU_RULES)
    try:
        await asyncio.sleep(1.5)
        phone = floor.add_client(full_name="Оптовик С Вопросом О Доставке", segment="wholesale", assigned="302",
                                 department="current_service")
        result = await call(e2e_settings, tmp_path, phone, dtmf="3", dtmf_delay=2.0, hold_after=6)
        assert result.answered
        row = await wait_for(lambda: call_row(floor, phone), what="call row")
        topic = floor.sql("SELECT topic, digits FROM calls WHERE call_uid = :u", u=row.call_uid)[0]
        assert (topic.topic, topic.digits) == ("delivery", "3")
        assert row.rule == "delivery_to_sales_operator" and row.extension == "302"
        # Without a key the caller gets the menu's default topic and his segment's department.
        silent = floor.add_client(full_name="Молчаливый Оптовик", segment="wholesale")
        await call(e2e_settings, tmp_path, silent, hold_after=12)
        row = await wait_for(lambda: call_row(floor, silent), what="call row")
        assert row.rule == "known_by_segment" and row.department_code == "current_sales"
        assert row.extension in ("101", "102", "103")
    finally:
        await asyncio.to_thread(_apply_rules, database_url, RULES)
        await asyncio.sleep(1.5)


async def test_operator_on_an_internal_call_is_not_offered_a_customer(routed, e2e_settings, tmp_path):
    floor = routed
    floor.sql("UPDATE operators SET status = 'paused', pause_reason = 'тест' WHERE extension IN ('102', '103')")
    try:
        invites_before = floor.phones["101"].invites
        # 101 calls 202 internally; 202's phone rings (never answers) and 101 gives up after 6 s.
        internal = asyncio.create_task(
            operator_phone(floor, e2e_settings, tmp_path, "101").call("202", timeout=6, raise_on_error=False))
        await asyncio.sleep(1.5)
        phone = unique_mobile()
        t0 = asyncio.get_running_loop().time()
        customer = asyncio.create_task(call(e2e_settings, tmp_path, phone, hold_after=25, timeout=10))
        internal_result = await internal
        assert not internal_result.answered  # 202 never picked up; the call was cancelled
        assert floor.phones["202"].invites >= 1
        await asyncio.sleep(0.5)
        # While 101 was on his internal call nobody rang his phone for the customer.
        assert floor.phones["101"].invites == invites_before
        await floor.phones["101"].wait_for_calls(invites_before + 1, timeout=12)
        assert asyncio.get_running_loop().time() - t0 > 3.5
        customer.cancel()
        row = await wait_for(lambda: call_row(floor, phone), timeout=30, what="call row")
        assert row.extension == "101" and row.wait_seconds > 3
    finally:
        floor.set_available("102", "103")


async def test_operator_blind_transfers_the_caller_to_a_colleague(routed, e2e_settings, database_url, tmp_path):
    from ivr.phones.sipp import SippAnswerer
    from ivr.stack.operators import sync_operators

    floor = routed
    transferring = await SippAnswerer(mode="answer", hold=20, refer_to="301", refer_after=1.5, workdir=tmp_path,
                                      refer_domain=f"{e2e_settings.bind_host}:{e2e_settings.sip_port}").start()
    old_contact = floor.phones["302"].uri
    floor.sql("UPDATE operators SET sip_contact = :c WHERE extension = '302'", c=transferring.uri)
    await asyncio.to_thread(sync_operators, e2e_settings, database_url)
    try:
        colleague_before = floor.phones["301"].invites
        phone = floor.add_client(full_name="Клиент Для Перевода", segment="wholesale", deals=1, assigned="302",
                                 department="current_service")
        result = await call(e2e_settings, tmp_path, phone, hold_after=8)
        assert result.answered
        assert transferring.invites == 1
        await floor.phones["301"].wait_for_calls(colleague_before + 1, timeout=10)  # the transfer target rang
        row = await wait_for(lambda: call_row(floor, phone), what="call row")
        assert row.extension == "302" and row.result == "transferred"
    finally:
        floor.sql("UPDATE operators SET sip_contact = :c WHERE extension = '302'", c=old_contact)
        await asyncio.to_thread(sync_operators, e2e_settings, database_url)
        await transferring.stop()


async def test_busy_phone_is_recorded_and_the_next_operator_takes_the_call(routed, e2e_settings, database_url,
                                                                           tmp_path):
    from ivr.phones.sipp import SippAnswerer
    from ivr.stack.operators import sync_operators

    floor = routed
    busy = await SippAnswerer(mode="busy", workdir=tmp_path).start()
    old_contact = floor.phones["101"].uri
    floor.sql("UPDATE operators SET sip_contact = :c WHERE extension = '101'", c=busy.uri)
    # 101 (busy phone) is the only current-sales operator on duty; the fallback department
    # (current service) takes the call after the department's wait.
    floor.sql("UPDATE operators SET status = 'paused', pause_reason = 'тест' WHERE extension IN ('102', '103')")
    await asyncio.to_thread(sync_operators, e2e_settings, database_url)
    try:
        phone = unique_mobile()
        assert (await call(e2e_settings, tmp_path, phone, hold_after=20)).answered
        row = await wait_for(lambda: call_row(floor, phone), timeout=30, what="call row")
        trail = [(a.extension, a.outcome) for a in floor.sql(
            "SELECT extension, outcome FROM call_attempts WHERE call_uid = :u ORDER BY id", u=row.call_uid)]
        assert trail[0] == ("101", "busy") and row.extension in ("301", "302"), trail
        assert busy.invites == 1
        # A busy phone is not a miss: 101 is not paused for it.
        assert floor.sql("SELECT status FROM operators WHERE extension = '101'")[0].status == "available"
    finally:
        floor.sql("UPDATE operators SET sip_contact = :c WHERE extension = '101'", c=old_contact)
        floor.set_available("102", "103")
        await asyncio.to_thread(sync_operators, e2e_settings, database_url)
        await busy.stop()
