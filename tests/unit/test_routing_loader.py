"""routing.loader: every error kind with its line number, all errors at once, the CLI."""

import textwrap

import pytest
from click.testing import CliRunner

from routing import loader
from routing.cli import routing_group
from routing.facts import CallerFacts, MenuOption
from routing.rules import Condition, Route

GOOD = textwrap.dedent("""\
    settings:
      default_department: sales
      active_sales_department: active
      first_deal_threshold: 2
      reaction_standard_seconds: 15
      autopause: {misses: 2, ring_seconds: 10}
      summon: {department: sales, confirm_minutes: 3}
    departments:
      sales:
        name: "Отдел текущих продаж"
        strategy: fewest_calls
        ring_timeout: 12
        max_wait: 50
        wrapup_seconds: 7
        fallback: active
        timezone: Asia/Yekaterinburg
        hours: {mon-fri: "09:00-13:00, 14:00-19:00", sat: closed, sun: "10:00-12:00"}
        holidays: RU
        closed_dates: [2026-12-30]
        open_dates: {2027-01-07: "10:00-14:00"}
      active:
        name: "Отдел активных продаж"
        holidays: none
    segments: {retail: sales, wholesale: active}
    rules:
      - name: by_topic
        when: {topic: [delivery, warehouse], segment: [retail, wholesale], stage: client, deals_min: 1, deals_max: 9}
        route: {to: client_operator, then: sales}
      - name: prospects
        when: {known: true, has_deals: false, called_by_active_sales: true, has_assigned_operator: false}
        route: {to: active_sales_manager}
      - name: everyone
        when: {}
        route: {to: segment_department}
        menu:
          prompt: [vm-press, digits/1]
          options: {1: purchase, "0": delivery}
          timeout: 4
          default: purchase
    """)


def errors_of(text: str) -> list[str]:
    ruleset, errors = loader.check(text, "rules.yaml")
    assert ruleset is None
    return errors


def test_a_good_file_parses_to_every_value():
    r = loader.parse(GOOD)
    assert r.settings.default_department == "sales"
    assert r.settings.first_deal_threshold == 2
    assert r.settings.reaction_standard_seconds == 15.0
    assert (r.settings.autopause.misses, r.settings.autopause.ring_seconds) == (2, 10)
    assert (r.settings.summon.department, r.settings.summon.confirm_minutes) == ("sales", 3)
    sales = r.departments["sales"]
    assert (sales.name, sales.strategy, sales.ring_timeout, sales.max_wait, sales.wrapup_seconds, sales.fallback,
            sales.timezone) == ("Отдел текущих продаж", "fewest_calls", 12, 50, 7, "active", "Asia/Yekaterinburg")
    assert sales.hours[0] == ((540, 780), (840, 1140)) and sales.hours[5] == () and sales.hours[6] == ((600, 720),)
    assert sales.closed_dates == ("2026-12-30",) and sales.open_dates == (("2027-01-07", ((600, 840),)),)
    active = r.departments["active"]
    assert (active.strategy, active.max_wait, active.holidays, active.hours) == ("longest_idle", 60, None, None)
    assert r.segments == {"retail": "sales", "wholesale": "active"}
    assert [rule.name for rule in r.rules] == ["by_topic", "prospects", "everyone"]
    assert r.rules[0].when == Condition(topic=("delivery", "warehouse"), segment=("retail", "wholesale"),
                                        stage=("client",), deals_min=1, deals_max=9)
    assert r.rules[0].route == Route(to="client_operator", then="sales")
    assert r.rules[1].route == Route(to="active_sales_manager")
    menu = r.rules[2].menu
    assert menu.prompt == ("vm-press", "digits/1") and menu.timeout == 4.0 and menu.default_topic == "purchase"
    assert menu.options == (MenuOption("1", "purchase"), MenuOption("0", "delivery"))


def test_the_company_file_is_valid():
    ruleset, source = loader.load()
    assert len(ruleset.rules) == 7 and len(ruleset.departments) == 7
    assert "Отдел текущих продаж" in source


def replace(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


@pytest.mark.parametrize("old,new,expected", [
    ("  first_deal_threshold: 2", "  first_deal_treshold: 2",
     "rules.yaml:4: settings.first_deal_treshold: unknown key"),
    ("    strategy: fewest_calls", "    strategy: random",
     "rules.yaml:11: departments.sales.strategy: unknown strategy 'random'"),
    ("    fallback: active", "    fallback: supply",
     "rules.yaml:15: departments.sales.fallback: unknown department 'supply'"),
    ("    timezone: Asia/Yekaterinburg", "    timezone: Asia/Atlantis",
     "rules.yaml:16: departments.sales.timezone: unknown time zone 'Asia/Atlantis'"),
    ('sat: closed, sun: "10:00-12:00"', 'sat: closed, sun: "22:00-02:00"',
     "rules.yaml:17: departments.sales.hours.sun: bad time range '22:00-02:00': the end must be after the start"),
    ('sat: closed, sun: "10:00-12:00"', 'sat: closed, sunday: "10:00-12:00"',
     "rules.yaml:17: departments.sales.hours.sunday: bad day 'sunday'"),
    ("    closed_dates: [2026-12-30]", "    closed_dates: [2026-13-30]",
     "rules.yaml:19: departments.sales.closed_dates: expected a date YYYY-MM-DD"),
    ("  active:\n", "  Active-Sales:\n",
     "rules.yaml:21: departments.Active-Sales: 'Active-Sales' is not a valid department code"),
    ('    name: "Отдел активных продаж"', '    name: "Отдел\\nактивных продаж"',
     "rules.yaml:22: departments.active.name: must not contain newlines or control characters"),
    ("segments: {retail: sales, wholesale: active}", "segments: {retail: sales, wholesail: active}",
     "rules.yaml:24: segments.wholesail: unknown segment 'wholesail'"),
    ("segment: [retail, wholesale]", "segment: [retail, vip]",
     "rules.yaml:27: rules[0].when.segment: unknown segment 'vip'"),
    ("deals_max: 9}", "deals_max: 9, vip: true}",
     "rules.yaml:27: rules[0].when.vip: unknown key"),
    ("route: {to: client_operator, then: sales}", "route: {to: client_operator, then: sale}",
     "rules.yaml:28: rules[0].route.then: unknown department 'sale'"),
    ("route: {to: active_sales_manager}", "route: {to: the_boss}",
     "rules.yaml:31: rules[1].route.to: unknown target 'the_boss'"),
    ("route: {to: active_sales_manager}", "route: {department: sales, to: assigned_operator}",
     "rules.yaml:31: rules[1].route: give exactly one of department"),
    ("called_by_active_sales: true", "called_by_active_sales: yes please",
     "rules.yaml:30: rules[1].when.called_by_active_sales: expected true or false"),
    ("  - name: everyone", "  - name: prospects",
     "rules.yaml:32: rules[2] (prospects): duplicate rule name (first defined on line 29)"),
    ("  - name: everyone", "  - name: Every One",
     "rules.yaml:32: rules[2].name: 'Every One' is not a valid rule name"),
    ("prompt: [vm-press, digits/1]", "prompt: [vm-press, ../../etc/passwd]",
     "rules.yaml:36: rules[2].menu.prompt: '../../etc/passwd' is not a valid sound name"),
    ('options: {1: purchase, "0": delivery}', 'options: {1: purchase, "*": delivery}',
     "rules.yaml:37: rules[2].menu.options.*: menu digit '*' must be one of 0-9"),
    ('options: {1: purchase, "0": delivery}', 'options: {12: purchase, "0": delivery}',
     "rules.yaml:37: rules[2].menu.options.12: menu digit 12 must be one of 0-9"),
    ("      default: purchase", "      default: complaints",
     "rules.yaml:39: rules[2].menu.default: default topic 'complaints' is not one of the options"),
    ("    ring_timeout: 12", "    ring_timeout: twelve",
     "rules.yaml:12: departments.sales.ring_timeout: expected a whole number from 1 to 600"),
    ("    ring_timeout: 12", "    ring_timeout: 12\n    ring_timeout: 13",
     "rules.yaml:13: departments.sales.ring_timeout: duplicate key"),
    ("settings:\n", "setings:\n", "rules.yaml:1: setings: unknown key"),
])
def test_each_error_kind_names_its_line(old, new, expected):
    errors = errors_of(replace(old, new))
    assert any(e.startswith(expected) for e in errors), errors


def test_yaml_syntax_error_has_its_line():
    errors = errors_of(replace("  autopause: {misses: 2, ring_seconds: 10}", "  autopause: {misses: 2, ring_seconds: 10"))
    assert len(errors) == 1
    assert errors[0].startswith("rules.yaml:7: YAML syntax error"), errors


def test_all_errors_are_reported_in_line_order():
    text = GOOD.replace("strategy: fewest_calls", "strategy: random") \
        .replace("timezone: Asia/Yekaterinburg", "timezone: Mars/Olympus") \
        .replace("route: {to: active_sales_manager}", "route: {department: nowhere}") \
        .replace("      timeout: 4", "      timeout: 400")
    errors = errors_of(text)
    assert [e.split(":")[1] for e in errors] == ["11", "16", "31", "38"], errors
    assert errors[2] == ("rules.yaml:31: rules[1].route.department: unknown department 'nowhere' "
                         "(departments: active, sales)")
    assert errors[3] == "rules.yaml:38: rules[2].menu.timeout: 400 is out of range 1..30"


def test_rule_after_a_catch_all_is_unreachable():
    text = GOOD + "  - name: late\n    when: {known: true}\n    route: {department: sales}\n"
    assert errors_of(text) == ["rules.yaml:40: rules[3] (late): unreachable: rule everyone on line 32 "
                               "matches every call"]


def test_missing_sections_and_empty_file():
    assert errors_of("") == ["rules.yaml:1: the file is empty"]
    errors = errors_of("settings: {}\n")
    assert "rules.yaml:1: missing section 'departments'" in errors
    assert "rules.yaml:1: missing section 'rules'" in errors


def test_default_settings_must_name_real_departments():
    text = GOOD.replace("  default_department: sales\n", "")
    assert errors_of(text) == ["rules.yaml:1: settings.default_department: unknown department 'current_sales' "
                               "(departments: active, sales)"]


def test_python_tags_are_not_executed():
    errors = errors_of(GOOD.replace('name: "Отдел текущих продаж"', 'name: !!python/object/apply:os.system ["true"]'))
    assert errors[0] == ("rules.yaml:10: departments.sales.name: unsupported YAML tag "
                         "tag:yaml.org,2002:python/object/apply:os.system"), errors
    assert all(e.startswith("rules.yaml:10:") for e in errors), errors


def test_parse_raises_rules_error_with_all_lines():
    with pytest.raises(loader.RulesError) as caught:
        loader.parse(GOOD.replace("strategy: fewest_calls", "strategy: random"))
    assert len(caught.value.errors) == 1 and "rules.yaml:11:" in str(caught.value)


# --- CLI (no database) ---------------------------------------------------------------------------
def test_cli_check_ok_and_errors(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(routing_group, ["check"])
    assert ok.exit_code == 0, ok.output
    assert ok.output.strip() == "ok: 7 rules, 7 departments"
    bad = tmp_path / "mine.yaml"
    bad.write_text(GOOD.replace("strategy: fewest_calls", "strategy: random").replace("ring_timeout: 12", "ring_timeout: 0"))
    result = runner.invoke(routing_group, ["check", str(bad)])
    assert result.exit_code == 1
    assert "mine.yaml:11: departments.sales.strategy: unknown strategy 'random'" in result.output
    assert "mine.yaml:12: departments.sales.ring_timeout: 0 is out of range 1..600" in result.output
    assert "2 error(s) in" in result.output


def test_cli_explain_prints_the_ladder():
    result = CliRunner().invoke(routing_group, ["explain", "--deals", "2", "--assigned", "301",
                                                "--at", "2026-11-24T12:00+03:00"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "rule: client_with_deals"
    assert lines[2] == "step 1: assigned     operator 301 of current_service for 20s (reaction standard)"
    assert lines[3] == "step 2: department   current_service for 60s"
    closed = CliRunner().invoke(routing_group, ["explain", "--at", "2027-01-07T12:00+03:00"])
    assert "closed, reopens 2027-01-09T10:00:00+03:00" in closed.output


def test_decide_on_a_parsed_good_file():
    r = loader.parse(GOOD)
    facts = CallerFacts(e164=None, client_id=5, segment="retail", stage="client", deals_count=1,
                        assigned_operator="301", topic="delivery")
    from datetime import datetime
    from zoneinfo import ZoneInfo
    d = r.decide(facts, datetime(2026, 11, 24, 12, 0, tzinfo=ZoneInfo("Asia/Yekaterinburg")))
    assert d.rule == "by_topic"
    assert [(s.kind, s.department, s.operator, s.timeout) for s in d.steps] == [
        ("assigned", "sales", "301", 15.0), ("department", "sales", None, 50.0), ("fallback", "active", None, 60.0)]
