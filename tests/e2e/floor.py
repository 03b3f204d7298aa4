"""The sales floor of the inbound end-to-end tests: rules, operators on answering phones, helpers.

Operators are sipp answering phones (static contacts of their PJSIP endpoints, generated from
the operators table); callers are sipp phones calling the public number through the carrier
trunk from numbers of clients of each kind. The rules are a short-timeout copy of the company's
rules (routing/rules.yaml) applied to the database like an admin would.
"""

from __future__ import annotations

import asyncio
import time


from ivr.phones.sipp import SippAnswerer, SippCaller
from models.db import run_sql as _sql
from tests.conftest import unique_mobile

RULES = """
settings:
  default_department: current_sales
  active_sales_department: active_sales
  first_deal_threshold: 1
  reaction_standard_seconds: 4
  autopause: {misses: 1, ring_seconds: 3}
  summon: {department: current_sales, confirm_minutes: 0.15}
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


