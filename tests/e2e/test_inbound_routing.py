"""Inbound routing end to end: real Asterisk, the real controller, real SIP phones, real Postgres.

Operators are sipp answering phones (static contacts of their PJSIP endpoints, generated from
the operators table); callers are sipp phones calling the public number through the carrier
trunk from numbers of clients of each kind. The rules are a short-timeout copy of the company's
rules (routing/rules.yaml) applied to the database like an admin would.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from ivr.phones.sipp import SippAnswerer, SippCaller
from models.db import make_engine
from tests.conftest import unique_mobile

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

RULES = """
settings:
  default_department: current_sales
  active_sales_department: active_sales
  first_deal_threshold: 1
  reaction_standard_seconds: 4
  autopause: {misses: 1, ring_seconds: 3}
  summon: {department: current_sales, confirm_minutes: 1}
departments:
  current_sales: {name: "Отдел текущих продаж", strategy: longest_idle, ring_timeout: 3, max_wait: 8,
                  wrapup_seconds: 0, fallback: current_service, timezone: Europe/Moscow, holidays: null}
  active_sales: {name: "Отдел активных продаж", strategy: longest_idle, ring_timeout: 3, max_wait: 6,
                 wrapup_seconds: 0, fallback: current_sales, timezone: Europe/Moscow, holidays: null}
  current_service: {name: "Отдел текущего обслуживания", strategy: fewest_calls, ring_timeout: 3, max_wait: 6,
                    wrapup_seconds: 0, timezone: Europe/Moscow, holidays: null}
  retail: {name: "Розничный зал", strategy: longest_idle, ring_timeout: 3, max_wait: 6, wrapup_seconds: 0,
           timezone: Europe/Moscow, holidays: null}
  documents: {name: "Оформление документов", strategy: longest_idle, ring_timeout: 3, max_wait: 6,
              wrapup_seconds: 0, timezone: Europe/Moscow, holidays: null}
segments: {retail: retail, small_wholesale: current_sales, wholesale: current_sales, large_wholesale: current_sales}
rules:
  - name: called_back_by_active_sales
    when: {called_by_active_sales: true}
    route: {to: active_sales_manager, then: active_sales}
  - name: client_with_deals
    when: {has_deals: true}
    route: {to: assigned_operator, then: current_service}
  - name: known_by_segment
    when: {known: true}
    route: {to: segment_department}
  - name: unknown_caller
    when: {}
    route: {department: current_sales}
"""

# extension -> (name, department, answering mode)
OPERATORS = {
    "101": ("Анна Смирнова", "current_sales", "answer"),
    "102": ("Борис Козлов", "current_sales", "answer"),
    "103": ("Вера Попова", "current_sales", "answer"),
    "201": ("Глеб Орлов", "active_sales", "answer"),
    "202": ("Дарья Волкова", "active_sales", "ring"),   # never picks up
    "301": ("Егор Лебедев", "current_service", "answer"),
    "302": ("Жанна Новикова", "current_service", "answer"),
    "401": ("Зоя Морозова", "retail", "answer"),
    "402": ("Игорь Павлов", "retail", "answer"),       # the retail consultant who summons
}


def _apply_rules(url: str, source: str) -> int:
    from routing.loader import parse
    from routing.store import apply_ruleset

    ruleset = parse(source, "test-rules.yaml")
    return apply_ruleset(url, ruleset, source, "pytest")


def _sql(url: str, statement: str, **params):
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return result.all() if result.returns_rows else None
    finally:
        engine.dispose()


class Floor:
    """The operators' answering phones and helpers to read what happened."""

    def __init__(self, url: str, phones: dict[str, SippAnswerer]):
        self.url = url
        self.phones = phones

    def invites(self) -> dict[str, int]:
        return {ext: p.invites for ext, p in self.phones.items()}

    def sql(self, statement: str, **params):
        return _sql(self.url, statement, **params)

    def set_available(self, *extensions: str) -> None:
        self.sql("UPDATE operators SET status = 'available', pause_reason = NULL WHERE extension = ANY(:e)",
                 e=list(extensions))

    def add_client(self, *, full_name: str, segment: str | None = None, deals: int = 0,
                   assigned: str | None = None, department: str | None = None) -> str:
        phone = unique_mobile()
        rows = self.sql(
            "INSERT INTO clients (full_name, segment, deals_count, stage, assigned_operator_id, department_id) "
            "VALUES (:n, :s, :d, :stage, (SELECT id FROM operators WHERE extension = :a), "
            "(SELECT id FROM departments WHERE code = :dep)) RETURNING id",
            n=full_name, s=segment, d=deals, stage="client" if deals else "potential", a=assigned, dep=department)
        client_id = rows[0][0]
        self.sql("INSERT INTO client_phones (client_id, e164) VALUES (:c, :p)", c=client_id, p="+" + phone)
        return phone


async def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
async def floor(asterisk, e2e_settings, database_url, tmp_path_factory):
    from ivr.stack.operators import sync_operators

    _sql(database_url, "TRUNCATE call_attempts, violations, callback_requests, summons, operator_events, contacts, "
                       "deals, client_phones, calls RESTART IDENTITY CASCADE")
    _sql(database_url, "DELETE FROM clients")
    _sql(database_url, "DELETE FROM operators")
    await asyncio.to_thread(_apply_rules, database_url, RULES)
    workdir = tmp_path_factory.mktemp("floor")
    phones: dict[str, SippAnswerer] = {}
    for ext, (name, dept, mode) in OPERATORS.items():
        phone = SippAnswerer(mode=mode, hold=1.5, workdir=workdir)
        await phone.start()
        phones[ext] = phone
        _sql(database_url,
             "INSERT INTO operators (name, extension, department_id, sip_contact, status) VALUES "
             "(:n, :e, (SELECT id FROM departments WHERE code = :d), :c, 'available')",
             n=name, e=ext, d=dept, c=phone.uri)
    await asyncio.to_thread(sync_operators, e2e_settings, database_url)
    yield Floor(database_url, phones)
    for phone in phones.values():
        await phone.stop()


@pytest.fixture(scope="module")
async def routed(floor, controller):
    """The controller (module-scoped) started after the floor exists."""
    return floor


def public(settings) -> str:
    return settings.public_number.lstrip("+")


async def call(settings, tmp_path, caller_id: str, **kwargs):
    caller = SippCaller(settings.bind_host, settings.sip_port, caller_id=caller_id, workdir=tmp_path)
    kwargs.setdefault("hold_after", 6)
    kwargs.setdefault("timeout", 10)
    return await caller.call(public(settings), **kwargs)


def call_row(floor: Floor, phone: str):
    rows = floor.sql("SELECT c.call_uid, c.rule, c.department_code, c.result, o.extension, c.wait_seconds, "
                     "c.talk_seconds, c.ended_at FROM calls c LEFT JOIN operators o ON o.id = c.answered_by_operator_id "
                     "WHERE c.from_e164 = :p ORDER BY c.started_at DESC LIMIT 1", p="+" + phone)
    return rows[0] if rows and rows[0].ended_at else None


def attempts(floor: Floor, call_uid: str):
    return floor.sql("SELECT extension, step, outcome FROM call_attempts WHERE call_uid = :u ORDER BY id", u=call_uid)


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
    for caller_id in ("anonymous", "'; DROP TABLE clients; --", "x" * 120):
        caller = SippCaller(e2e_settings.bind_host, e2e_settings.sip_port, caller_id=None,
                            from_header=f'"{caller_id[:60]}" <sip:{caller_id.replace(" ", "")[:100]}@127.0.0.1>'
                            if "'" not in caller_id else '"attacker" <sip:anonymous@127.0.0.1>',
                            workdir=tmp_path)
        result = await caller.call(public(e2e_settings), hold_after=3, timeout=10)
        assert result.answered
    assert floor.sql("SELECT count(*) AS n FROM clients")[0].n >= 1  # table still there


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
