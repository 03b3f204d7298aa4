"""Ruleset.decide over the company's rules file (routing/rules.yaml) and small custom files:
the sales methodology, rule order, the topic menu, escalation ladders, hours, degraded mode."""

import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from routing import loader
from routing.facts import SEGMENTS, CallerFacts, RingStep
from routing.rules import Ruleset

MSK = ZoneInfo("Europe/Moscow")
# Tuesday 2026-11-24 12:00 Moscow: every department of the default file is open.
WORKDAY_NOON = datetime(2026, 11, 24, 12, 0, tzinfo=MSK)


@pytest.fixture(scope="module")
def rules() -> Ruleset:
    ruleset, _source = loader.load()
    return ruleset


def unknown(**kw) -> CallerFacts:
    return CallerFacts(e164="+79161234567", **kw)


def client(**kw) -> CallerFacts:
    return CallerFacts(e164="+79161234567", client_id=42, **kw)


def kinds(decision):
    return [(s.kind, s.department, s.operator, s.timeout, s.reaction_standard) for s in decision.steps]


# --- the sales methodology ----------------------------------------------------------------------
def test_first_call_from_unknown_number_goes_to_current_sales(rules):
    d = rules.decide(unknown(), WORKDAY_NOON)
    assert d.rule == "unknown_caller"
    assert d.department == "current_sales"
    assert kinds(d) == [("department", "current_sales", None, 60.0, False),
                        ("fallback", "active_sales", None, 45.0, False)]
    assert d.menu is None and not d.closed and not d.degraded


def test_call_back_after_active_sales_call_rings_that_manager_first(rules):
    d = rules.decide(client(segment="wholesale", active_sales_manager="201"), WORKDAY_NOON)
    assert d.rule == "called_back_by_active_sales"
    assert d.department == "active_sales"
    assert kinds(d) == [("active_sales", "active_sales", "201", 20.0, True),
                        ("department", "active_sales", None, 45.0, False),
                        ("fallback", "current_sales", None, 60.0, False)]
    assert d.trail[-1] == ("rule called_back_by_active_sales: manager 201 for 20s, then active_sales for 45s, "
                           "then fallback current_sales for 60s")


def test_client_after_first_deal_goes_to_his_operator_then_current_service(rules):
    d = rules.decide(client(segment="wholesale", deals_count=1, assigned_operator="301",
                            department="current_sales"), WORKDAY_NOON)
    assert d.rule == "client_with_deals"
    assert d.department == "current_service"
    assert kinds(d) == [("assigned", "current_service", "301", 20.0, True),
                        ("department", "current_service", None, 60.0, False),
                        ("fallback", "current_sales", None, 60.0, False)]


def test_missing_assigned_operator_starts_the_ladder_at_the_department(rules):
    d = rules.decide(client(deals_count=3), WORKDAY_NOON)
    assert d.rule == "client_with_deals"
    assert [s.kind for s in d.steps] == ["department", "fallback"]
    assert d.steps[0].department == "current_service"
    assert "no assigned operator: straight to current_service" in d.trail


def test_first_deal_threshold_two_keeps_a_one_deal_client_out_of_current_service(rules):
    text = loader.DEFAULT_FILE.read_text().replace("first_deal_threshold: 1", "first_deal_threshold: 2")
    two = loader.parse(text)
    assert two.settings.first_deal_threshold == 2
    one_deal = client(segment="wholesale", deals_count=1, assigned_operator="301")
    assert rules.decide(one_deal, WORKDAY_NOON).rule == "client_with_deals"
    assert two.decide(one_deal, WORKDAY_NOON).rule == "known_by_segment"
    assert two.decide(client(deals_count=2, assigned_operator="301"), WORKDAY_NOON).rule == "client_with_deals"


@pytest.mark.parametrize("segment,department", [
    ("retail", "retail"), ("small_wholesale", "current_sales"), ("wholesale", "current_sales"),
    ("large_wholesale", "current_sales"), (None, "current_sales"),
])
def test_known_client_without_deals_goes_by_segment_table(rules, segment, department):
    d = rules.decide(client(segment=segment, topic="purchase"), WORKDAY_NOON)
    assert d.rule == ("retail_buyers" if segment == "retail" else "known_by_segment")
    assert d.department == department
    assert d.steps[0] == RingStep(kind="department", department=department, timeout=60.0)


def test_retail_buyers_stay_on_the_retail_floor_after_deals(rules):
    d = rules.decide(client(segment="retail", deals_count=5), WORKDAY_NOON)
    assert (d.rule, d.department) == ("retail_buyers", "retail")
    wholesale = rules.decide(client(segment="wholesale", deals_count=5, assigned_operator="301"), WORKDAY_NOON)
    assert wholesale.rule == "client_with_deals"


def test_segment_table_is_data_the_admin_edits(rules):
    text = loader.DEFAULT_FILE.read_text().replace("  wholesale: current_sales", "  wholesale: retail")
    edited = loader.parse(text)
    assert edited.segments["wholesale"] == "retail"
    assert edited.decide(client(segment="wholesale", topic="purchase"), WORKDAY_NOON).department == "retail"


# --- topic menu -------------------------------------------------------------------------------
def test_menu_is_asked_first_then_the_rules_are_evaluated_again_with_the_topic(rules):
    facts = client(segment="wholesale")
    first = rules.decide(facts, WORKDAY_NOON)
    assert first.rule == "known_by_segment"
    assert first.steps == ()
    assert first.menu is not None
    assert [(o.digit, o.topic) for o in first.menu.options] == [("1", "purchase"), ("2", "documents"),
                                                                ("3", "delivery")]
    assert first.menu.timeout == 5.0 and first.menu.default_topic == "purchase"

    docs = rules.decide(facts.with_topic(first.menu.topic_for("2")), WORKDAY_NOON)
    assert docs.rule == "documents_to_clerk" and docs.menu is None
    assert kinds(docs) == [("department", "documents", None, 60.0, False),
                           ("fallback", "current_service", None, 60.0, False)]

    nothing = rules.decide(facts.with_topic(first.menu.topic_for(None)), WORKDAY_NOON)
    assert nothing.rule == "known_by_segment" and nothing.menu is None
    assert nothing.steps[0].department == "current_sales"


def test_menu_prompt_sounds_exist_in_the_russian_sound_package(rules):
    sounds = Path(__file__).resolve().parents[2] / ".cache/asterisk-root/usr/share/asterisk/sounds/ru_RU_f_IvrvoiceRU"
    if not sounds.is_dir():
        pytest.skip("Asterisk image not built here")
    for rule in rules.rules:
        for name in rule.menu.prompt if rule.menu else ():
            assert list(sounds.parent.glob(f"ru_RU_f_IvrvoiceRU/{name}.*")), name


def test_topic_rules_never_match_without_a_topic(rules):
    d = rules.decide(unknown(), WORKDAY_NOON)
    assert d.rule == "unknown_caller"


@pytest.mark.parametrize("topic", ["delivery", "warehouse"])
@pytest.mark.parametrize("facts", [
    unknown(), client(segment="retail"), client(segment="large_wholesale", deals_count=5, assigned_operator="301"),
    client(active_sales_manager="207"), client(department="supply"), client(department="warehouse", deals_count=2),
])
def test_delivery_and_warehouse_questions_never_go_to_supply_or_warehouse(rules, facts, topic):
    d = rules.decide(facts.with_topic(topic), WORKDAY_NOON)
    assert d.rule == "delivery_to_sales_operator"
    assert d.steps, d
    for department in [d.department] + [s.department for s in d.steps]:
        assert department not in ("supply", "warehouse")


def test_delivery_question_goes_to_the_clients_own_operator(rules):
    d = rules.decide(client(segment="wholesale", deals_count=2, assigned_operator="301", topic="delivery"),
                     WORKDAY_NOON)
    assert kinds(d)[:2] == [("assigned", "current_sales", "301", 20.0, True),
                            ("department", "current_sales", None, 60.0, False)]
    retail = rules.decide(client(segment="retail", topic="delivery"), WORKDAY_NOON)
    assert [s.department for s in retail.steps] == ["retail", "current_sales"]
    prospect = rules.decide(client(active_sales_manager="207", topic="delivery"), WORKDAY_NOON)
    assert kinds(prospect)[0] == ("active_sales", "active_sales", "207", 20.0, True)


def test_rules_fire_in_file_order(rules):
    # Matches both called_back_by_active_sales and known_by_segment: the earlier one wins.
    assert rules.decide(client(active_sales_manager="201"), WORKDAY_NOON).rule == "called_back_by_active_sales"
    # A documents topic beats the deals rule because documents_to_clerk comes first.
    assert rules.decide(client(deals_count=4, assigned_operator="301", topic="documents"),
                        WORKDAY_NOON).rule == "documents_to_clerk"
    first = loader.parse(SMALL)
    assert first.decide(client(), WORKDAY_NOON).rule == "a_known"
    swapped = loader.parse(SMALL.replace("when: {known: true}", "when: {segment: retail}"))
    assert swapped.decide(client(), WORKDAY_NOON).rule == "z_everyone"


def test_no_rule_matching_goes_to_default_department():
    only_retail = loader.parse(SMALL.replace("  - name: z_everyone\n    when: {}\n    route: {department: sales}\n", ""))
    d = only_retail.decide(unknown(), WORKDAY_NOON)
    assert d.rule == "default" and d.department == "sales"


# --- escalation ----------------------------------------------------------------------------------
def test_reaction_standard_is_the_personal_step_timeout():
    text = loader.DEFAULT_FILE.read_text().replace("reaction_standard_seconds: 20", "reaction_standard_seconds: 12")
    d = loader.parse(text).decide(client(deals_count=1, assigned_operator="301"), WORKDAY_NOON)
    assert d.steps[0].timeout == 12.0 and d.steps[0].reaction_standard
    assert not any(s.reaction_standard for s in d.steps[1:])


def test_closed_fallback_is_left_out_of_the_ladder(rules):
    # Saturday 11:00: current_sales is open (10-16), its fallback active_sales (mon-fri) is not.
    saturday = datetime(2026, 11, 28, 11, 0, tzinfo=MSK)
    d = rules.decide(unknown(), saturday)
    assert [s.kind for s in d.steps] == ["department"]


def test_fixed_department_rule_without_fallback_is_a_one_step_ladder():
    d = loader.parse(SMALL).decide(CallerFacts(e164=None, client_id=1, assigned_operator="11"), WORKDAY_NOON)
    assert d.rule == "a_known"
    assert kinds(d) == [("department", "sales", None, 60.0, False)]


# --- hours -----------------------------------------------------------------------------------
def test_after_hours_is_closed_with_next_opening(rules):
    evening = datetime(2026, 11, 24, 19, 30, tzinfo=MSK)
    d = rules.decide(unknown(), evening)
    assert d.closed and d.steps == () and d.department == "current_sales"
    assert d.reopens_at == "2026-11-25T09:00:00+03:00"


def test_russian_holiday_is_closed(rules):
    christmas = datetime(2027, 1, 7, 12, 0, tzinfo=MSK)
    d = rules.decide(client(deals_count=1, assigned_operator="301"), christmas)
    assert d.closed and d.rule == "client_with_deals" and d.department == "current_service"
    assert d.reopens_at == "2027-01-09T10:00:00+03:00"  # Jan 8 is a holiday too; Saturday hours


def test_saturday_after_saturday_hours_reopens_monday(rules):
    d = rules.decide(unknown(), datetime(2026, 11, 28, 16, 0, tzinfo=MSK))
    assert d.closed and d.reopens_at == "2026-11-30T09:00:00+03:00"


def test_closed_department_does_not_ask_the_menu(rules):
    d = rules.decide(client(segment="wholesale"), datetime(2026, 11, 29, 12, 0, tzinfo=MSK))  # Sunday
    assert d.closed and d.menu is None


def test_department_in_yekaterinburg_uses_its_own_clock():
    text = SMALL.replace("timezone: Europe/Moscow", "timezone: Asia/Yekaterinburg")
    ekb = loader.parse(text)
    # 08:30 Moscow is 10:30 in Yekaterinburg: the 10:00-18:00 department is open there.
    assert not ekb.decide(unknown(), datetime(2026, 11, 24, 8, 30, tzinfo=MSK)).closed
    moscow = loader.parse(SMALL)
    closed = moscow.decide(unknown(), datetime(2026, 11, 24, 8, 30, tzinfo=MSK))
    assert closed.closed and closed.reopens_at == "2026-11-24T10:00:00+03:00"
    # 16:30 Moscow is 18:30 there: closed, reopens 10:00 local (+05:00).
    late = ekb.decide(unknown(), datetime(2026, 11, 24, 16, 30, tzinfo=MSK))
    assert late.closed and late.reopens_at == "2026-11-25T10:00:00+05:00"


# --- degraded ----------------------------------------------------------------------------------
def test_degraded_facts_go_to_the_default_department(rules):
    d = rules.decide(CallerFacts(e164="+79161234567", degraded=True), WORKDAY_NOON)
    assert d.rule == "degraded_default" and d.degraded
    assert d.department == "current_sales"
    assert [s.kind for s in d.steps] == ["department", "fallback"]


def test_degraded_rule_in_the_file_wins_over_the_default():
    text = SMALL.replace("rules:\n", "rules:\n  - name: db_down\n    when: {degraded: true}\n"
                                     "    route: {department: other}\n")
    ruleset = loader.parse(text)
    d = ruleset.decide(CallerFacts(e164=None, degraded=True), WORKDAY_NOON)
    assert (d.rule, d.department, d.degraded) == ("db_down", "other", True)
    assert ruleset.decide(unknown(), WORKDAY_NOON).rule == "z_everyone"


def test_degraded_decision_is_still_closed_after_hours(rules):
    d = rules.decide(CallerFacts(e164=None, degraded=True), datetime(2027, 1, 7, 12, 0, tzinfo=MSK))
    assert d.closed and d.degraded and d.rule == "degraded_default"


# --- serialisation -------------------------------------------------------------------------------
def test_json_round_trip_keeps_every_decision(rules):
    stored = json.loads(json.dumps(rules.to_json()))
    again = Ruleset.from_json(stored)
    assert again == rules
    for facts in (unknown(), client(segment="retail"), client(segment="retail", topic="delivery"),
                  client(deals_count=2, assigned_operator="301"), CallerFacts(e164=None, degraded=True)):
        for when in (WORKDAY_NOON, datetime(2027, 1, 7, 12, tzinfo=MSK)):
            assert again.decide(facts, when) == rules.decide(facts, when)


def test_from_json_refuses_an_unknown_format(rules):
    data = rules.to_json() | {"format": 99}
    with pytest.raises(ValueError, match="format 99"):
        Ruleset.from_json(data)


def test_every_segment_is_mapped_in_the_default_file(rules):
    assert set(rules.segments) == set(SEGMENTS)
    assert rules.settings.reaction_standard_seconds == 20.0
    assert rules.settings.autopause.misses == 1 and rules.settings.summon.confirm_minutes == 4


SMALL = """\
settings:
  default_department: sales
  active_sales_department: sales
  summon: {department: sales, confirm_minutes: 4}
departments:
  sales:
    name: "Продажи"
    timezone: Europe/Moscow
    hours: {mon-fri: "10:00-18:00"}
  other:
    name: "Другой"
rules:
  - name: a_known
    when: {known: true}
    route: {department: sales}
  - name: z_everyone
    when: {}
    route: {department: sales}
"""
