"""routing/rules.yaml -> Ruleset, with every problem reported as ``FILE:LINE: PATH: what``.

The YAML is composed into nodes (yaml.compose) so each value keeps its line; validation walks
the nodes, collects all errors (not just the first) and raises one RulesError listing them in
line order. Only safe YAML is read (no Python tags).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from routing import hours as hours_mod
from routing.facts import SEGMENTS, STRATEGIES, MenuOption, TopicMenu
from routing.rules import (
    TARGETS, AutopauseSettings, Condition, DepartmentSpec, Route, RoutingSettings, Rule, Ruleset, SummonSettings,
)

DEFAULT_FILE = Path(__file__).resolve().parent / "rules.yaml"

CODE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")          # departments.code (CHECK constraint)
RULE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,79}$")     # calls.rule is VARCHAR(80)
TOPIC = re.compile(r"^[a-z][a-z0-9_]{0,39}$")         # calls.topic is VARCHAR(40)
STAGE = re.compile(r"^[a-z][a-z0-9_]{0,29}$")         # clients.stage is VARCHAR(30)
# Asterisk sound names: ^[a-z0-9_/-]+$, and no empty, leading or trailing path parts.
SOUND = re.compile(r"^[a-z0-9_-]+(/[a-z0-9_-]+)*$")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

TOP_KEYS = ("settings", "departments", "segments", "rules")
SETTINGS_KEYS = ("default_department", "active_sales_department", "first_deal_threshold",
                 "reaction_standard_seconds", "autopause", "summon")
DEPARTMENT_KEYS = ("name", "strategy", "ring_timeout", "max_wait", "wrapup_seconds", "fallback", "timezone",
                   "hours", "holidays", "closed_dates", "open_dates")
RULE_KEYS = ("name", "when", "route", "menu")
WHEN_BOOL = ("known", "has_deals", "called_by_active_sales", "has_assigned_operator", "degraded")
WHEN_KEYS = ("known", "segment", "stage", "has_deals", "deals_min", "deals_max", "called_by_active_sales",
             "has_assigned_operator", "topic", "degraded")
ROUTE_KEYS = ("department", "to", "then")
MENU_KEYS = ("prompt", "options", "timeout", "default")


class RulesError(ValueError):
    """The rules file is not valid; ``errors`` holds every problem, one line each."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


@dataclass
class _Error:
    line: int
    text: str


class _Parser:
    def __init__(self, filename: str):
        self.filename = filename
        self.errors: list[_Error] = []
        self.constructor = SafeConstructor()
        # (node, path, code) of every department reference, checked once all are known.
        self.refs: list[tuple[Node, str, str]] = []
        # Every well-formed department code in the file, valid or not (so one bad department
        # does not also turn every reference to it into an error).
        self.declared: set[str] = set()

    # --- helpers -------------------------------------------------------------------------------
    def error(self, node: Node | None, path: str, what: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.errors.append(_Error(line, f"{self.filename}:{line}: {path}: {what}" if path
                                  else f"{self.filename}:{line}: {what}"))

    def value(self, node: Node) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except (ValueError, TypeError, OverflowError, yaml.YAMLError):
            # E.g. a date-looking scalar that is no date (2026-13-30): the text as written.
            return node.value if isinstance(node, ScalarNode) else None

    def untag(self, node: Node, path: str = "") -> None:
        """Report explicit tags safe YAML does not know (!!python/...) once, then read the node
        as plain data so the rest of the file is still checked."""
        defaults = {ScalarNode: "tag:yaml.org,2002:str", SequenceNode: "tag:yaml.org,2002:seq",
                    MappingNode: "tag:yaml.org,2002:map"}
        if node.tag not in SafeConstructor.yaml_constructors:
            self.error(node, path, f"unsupported YAML tag {node.tag}")
            node.tag = defaults[type(node)]
        if isinstance(node, SequenceNode):
            for index, child in enumerate(node.value):
                self.untag(child, f"{path}[{index}]")
        elif isinstance(node, MappingNode):
            for key, child in node.value:
                self.untag(key, path)
                self.untag(child, f"{path}.{key.value}" if path else str(key.value))

    def mapping(self, node: Node, path: str, allowed: tuple[str, ...] | None = None
                ) -> list[tuple[Any, Node, Node]] | None:
        if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return []
        if not isinstance(node, MappingNode):
            self.error(node, path, "expected a mapping (key: value)")
            return None
        items: list[tuple[Any, Node, Node]] = []
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.error(key_node, path, "keys must be plain names")
                continue
            key = self.value(key_node)
            where = f"{path}.{key}" if path else str(key)
            if key in seen:
                self.error(key_node, where, "duplicate key")
                continue
            seen.add(key)
            if allowed is not None and key not in allowed:
                self.error(key_node, where, f"unknown key (expected one of: {', '.join(allowed)})")
                continue
            items.append((key, key_node, value_node))
        return items

    def string(self, node: Node, path: str, pattern: re.Pattern | None = None, what: str = "",
               max_len: int = 200) -> str | None:
        if not isinstance(node, ScalarNode) or not isinstance(value := self.value(node), str):
            self.error(node, path, f"expected a text value{f' ({what})' if what else ''}")
            return None
        if CONTROL.search(value):
            self.error(node, path, "must not contain newlines or control characters")
            return None
        if pattern is not None and not pattern.match(value):
            self.error(node, path, f"{value!r} is not a valid {what or 'value'} (must match {pattern.pattern})")
            return None
        if not value.strip():
            self.error(node, path, "must not be empty")
            return None
        if len(value) > max_len:
            self.error(node, path, f"longer than {max_len} characters")
            return None
        return value

    def strings(self, node: Node, path: str, pattern: re.Pattern, what: str) -> tuple[str, ...] | None:
        nodes = node.value if isinstance(node, SequenceNode) else [node]
        if isinstance(node, SequenceNode) and not nodes:
            self.error(node, path, "empty list")
            return None
        out = [self.string(n, path, pattern, what) for n in nodes]
        return None if any(v is None for v in out) else tuple(out)  # type: ignore[arg-type]

    def integer(self, node: Node, path: str, lo: int, hi: int) -> int | None:
        value = self.value(node) if isinstance(node, ScalarNode) else None
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(node, path, f"expected a whole number from {lo} to {hi}")
            return None
        if not lo <= value <= hi:
            self.error(node, path, f"{value} is out of range {lo}..{hi}")
            return None
        return value

    def number(self, node: Node, path: str, lo: float, hi: float) -> float | None:
        value = self.value(node) if isinstance(node, ScalarNode) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.error(node, path, f"expected a number from {lo:g} to {hi:g}")
            return None
        if not lo <= value <= hi:
            self.error(node, path, f"{value:g} is out of range {lo:g}..{hi:g}")
            return None
        return float(value)

    def boolean(self, node: Node, path: str) -> bool | None:
        value = self.value(node) if isinstance(node, ScalarNode) else None
        if not isinstance(value, bool):
            self.error(node, path, "expected true or false")
            return None
        return value

    def department_ref(self, node: Node, path: str) -> str | None:
        code = self.string(node, path, CODE, "department code")
        if code is not None:
            self.refs.append((node, path, code))
        return code

    def iso_date(self, node: Node, path: str) -> str | None:
        value = self.value(node) if isinstance(node, ScalarNode) else None
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, str):
            try:
                return date.fromisoformat(value).isoformat()
            except ValueError:
                pass
        self.error(node, path, f"expected a date YYYY-MM-DD, got {value!r}")
        return None

    def ranges(self, node: Node, path: str) -> hours_mod.Ranges | None:
        raw: Any
        if isinstance(node, SequenceNode):
            raw = [self.value(n) if isinstance(n, ScalarNode) else None for n in node.value]
        else:
            raw = self.value(node) if isinstance(node, ScalarNode) else None
        try:
            return hours_mod.parse_ranges(raw)
        except ValueError as exc:
            self.error(node, path, str(exc))
            return None

    # --- sections --------------------------------------------------------------------------
    def parse(self, root: Node) -> Ruleset | None:
        self.untag(root)
        top = self.mapping(root, "", TOP_KEYS)
        if top is None:
            return None
        sections = {key: (key_node, value_node) for key, key_node, value_node in top}
        for required in ("departments", "rules"):
            if required not in sections:
                self.error(root, "", f"missing section {required!r}")
        departments = self.departments(sections["departments"][1]) if "departments" in sections else {}
        settings = self.settings(*sections["settings"]) if "settings" in sections else self.settings(root, None)
        segments = self.segments(sections["segments"][1]) if "segments" in sections else {}
        rules = self.rules(sections["rules"][1]) if "rules" in sections else ()
        for node, path, code in self.refs:
            if code not in self.declared:
                known = ", ".join(sorted(self.declared)) or "none"
                self.error(node, path, f"unknown department {code!r} (departments: {known})")
        for code, spec in departments.items():
            if spec.fallback == code:
                self.error(sections["departments"][1], f"departments.{code}.fallback",
                           "a department cannot be its own fallback")
        if self.errors:
            return None
        return Ruleset(settings=settings, departments=departments, segments=segments, rules=rules)

    def settings(self, key_node: Node, node: Node | None) -> RoutingSettings:
        values: dict[str, Any] = {}
        summon_department_written = False
        items = self.mapping(node, "settings", SETTINGS_KEYS) if node is not None else []
        for key, _k, v in items or []:
            path = f"settings.{key}"
            if key in ("default_department", "active_sales_department"):
                values[key] = self.department_ref(v, path)
            elif key == "first_deal_threshold":
                values[key] = self.integer(v, path, 1, 10)
            elif key == "reaction_standard_seconds":
                values[key] = self.number(v, path, 1, 600)
            elif key == "autopause":
                sub = dict((k, self.integer(n, f"{path}.{k}", 1, 100 if k == "misses" else 600))
                           for k, _, n in self.mapping(v, path, ("misses", "ring_seconds")) or [])
                values[key] = AutopauseSettings(**{k: x for k, x in sub.items() if x is not None})
            elif key == "summon":
                sub = {}
                for k, _, n in self.mapping(v, path, ("department", "confirm_minutes")) or []:
                    summon_department_written = summon_department_written or k == "department"
                    sub[k] = self.department_ref(n, f"{path}.{k}") if k == "department" \
                        else self.number(n, f"{path}.{k}", 0.05, 120)  # fractions: tests, drills
                values[key] = SummonSettings(**{k: x for k, x in sub.items() if x is not None})
        settings = RoutingSettings(**{k: v for k, v in values.items() if v is not None})
        # Defaults that were not written still have to name real departments.
        for key in ("default_department", "active_sales_department"):
            if key not in values:
                self.refs.append((key_node, f"settings.{key}", getattr(settings, key)))
        if not summon_department_written:
            self.refs.append((key_node, "settings.summon.department", settings.summon.department))
        return settings

    def departments(self, node: Node) -> dict[str, DepartmentSpec]:
        out: dict[str, DepartmentSpec] = {}
        items = self.mapping(node, "departments")
        if items is not None and not items:
            self.error(node, "departments", "at least one department is needed")
        for code, key_node, value_node in items or []:
            path = f"departments.{code}"
            if not isinstance(code, str) or not CODE.match(code):
                self.error(key_node, path, f"{code!r} is not a valid department code "
                                           f"(must match {CODE.pattern})")
                continue
            self.declared.add(code)
            spec = self.department(code, value_node, path)
            if spec is not None:
                out[code] = spec
        return out

    def department(self, code: str, node: Node, path: str) -> DepartmentSpec | None:
        items = self.mapping(node, path, DEPARTMENT_KEYS)
        if items is None:
            return None
        fields: dict[str, Any] = {"code": code}
        ok = True
        for key, key_node, v in items:
            where = f"{path}.{key}"
            value: Any
            if key == "name":
                value = self.string(v, where, what="department name")
            elif key == "strategy":
                value = self.string(v, where, what="strategy")
                if value is not None and value not in STRATEGIES:
                    self.error(v, where, f"unknown strategy {value!r} (expected one of: {', '.join(STRATEGIES)})")
                    value = None
            elif key == "ring_timeout":
                value = self.integer(v, where, 1, 600)
            elif key == "max_wait":
                value = self.integer(v, where, 1, 3600)
            elif key == "wrapup_seconds":
                value = self.integer(v, where, 0, 600)
            elif key == "fallback":
                value = self.department_ref(v, where)
            elif key == "timezone":
                value = self.string(v, where, what="time zone")
                if value is not None:
                    try:
                        ZoneInfo(value)
                    except (ValueError, KeyError, OSError):
                        self.error(v, where, f"unknown time zone {value!r} (e.g. Europe/Moscow, Asia/Yekaterinburg)")
                        value = None
            elif key == "hours":
                value = self.weekly(v, where)
            elif key == "holidays":
                raw = self.value(v) if isinstance(v, ScalarNode) else object()
                if raw in ("RU", "ru"):
                    value = "RU"
                elif raw in (None, False, "none"):
                    fields[key] = None
                    continue
                else:
                    self.error(v, where, f"expected RU or none, got {raw!r}")
                    value = None
            elif key == "closed_dates":
                nodes = v.value if isinstance(v, SequenceNode) else None
                if nodes is None:
                    self.error(v, where, "expected a list of dates")
                    value = None
                else:
                    dates = [self.iso_date(n, where) for n in nodes]
                    value = None if None in dates else tuple(dates)
            else:  # open_dates
                pairs = []
                for day, day_key, day_node in self.mapping(v, where) or []:
                    iso = self.iso_date(day_key, f"{where}.{day}")
                    ranges = self.ranges(day_node, f"{where}.{day}")
                    if iso is not None and ranges is not None:
                        pairs.append((iso, ranges))
                value = tuple(sorted(pairs))
            if value is None:
                ok = False
            else:
                fields[key] = value
        if "name" not in {key for key, _k, _v in items}:
            self.error(node, path, "missing name")
            ok = False
        return DepartmentSpec(**fields) if ok else None

    def weekly(self, node: Node, path: str) -> tuple[hours_mod.Ranges, ...] | None:
        items = self.mapping(node, path)
        if items is None:
            return None
        week: list[hours_mod.Ranges | None] = [None] * 7
        ok = True
        for key, key_node, value_node in items:
            where = f"{path}.{key}"
            try:
                days = hours_mod.parse_day_key(str(key))
            except ValueError as exc:
                self.error(key_node, where, str(exc))
                ok = False
                continue
            ranges = self.ranges(value_node, where)
            if ranges is None:
                ok = False
                continue
            for day in days:
                if week[day] is not None:
                    self.error(key_node, where, f"{hours_mod.DAYS[day]} is given more than once")
                    ok = False
                week[day] = ranges
        return tuple(day or () for day in week) if ok else None

    def segments(self, node: Node) -> dict[str, str]:
        out: dict[str, str] = {}
        for segment, key_node, value_node in self.mapping(node, "segments") or []:
            path = f"segments.{segment}"
            if segment not in SEGMENTS:
                self.error(key_node, path, f"unknown segment {segment!r} (expected one of: {', '.join(SEGMENTS)})")
                continue
            code = self.department_ref(value_node, path)
            if code is not None:
                out[segment] = code
        return out

    def rules(self, node: Node) -> tuple[Rule, ...]:
        if not isinstance(node, SequenceNode):
            self.error(node, "rules", "expected a list of rules (- name: ...)")
            return ()
        if not node.value:
            self.error(node, "rules", "at least one rule is needed")
        out: list[Rule] = []
        names: dict[str, int] = {}
        catch_all: tuple[str, int] | None = None
        for index, rule_node in enumerate(node.value):
            path = f"rules[{index}]"
            rule = self.rule(rule_node, path)
            if rule is None:
                continue
            line = rule_node.start_mark.line + 1
            path = f"rules[{index}] ({rule.name})"
            if rule.name in names:
                self.error(rule_node, path, f"duplicate rule name (first defined on line {names[rule.name]})")
            names.setdefault(rule.name, line)
            if catch_all is not None and not rule.when.degraded:
                self.error(rule_node, path, f"unreachable: rule {catch_all[0]} on line {catch_all[1]} "
                                            "matches every call")
            if rule.when.is_empty() and catch_all is None:
                catch_all = (rule.name, line)
            out.append(rule)
        return tuple(out)

    def rule(self, node: Node, path: str) -> Rule | None:
        items = self.mapping(node, path, RULE_KEYS)
        if items is None:
            return None
        parts = {key: (k, v) for key, k, v in items}
        if "name" not in parts:
            self.error(node, path, "missing name")
        if "route" not in parts:
            self.error(node, path, "missing route")
        name = self.string(parts["name"][1], f"{path}.name", RULE_NAME, "rule name") if "name" in parts else None
        when = self.when(parts["when"][1], f"{path}.when") if "when" in parts else Condition()
        route = self.route(parts["route"][1], f"{path}.route") if "route" in parts else None
        menu = self.menu(parts["menu"][1], f"{path}.menu") if "menu" in parts else None
        if name is None or when is None or route is None or ("menu" in parts and menu is None):
            return None
        return Rule(name=name, when=when, route=route, menu=menu)

    def when(self, node: Node, path: str) -> Condition | None:
        items = self.mapping(node, path, WHEN_KEYS)
        if items is None:
            return None
        values: dict[str, Any] = {}
        ok = True
        for key, _k, v in items:
            where = f"{path}.{key}"
            if key in WHEN_BOOL:
                value: Any = self.boolean(v, where)
            elif key in ("deals_min", "deals_max"):
                value = self.integer(v, where, 0, 1_000_000)
            elif key == "segment":
                value = self.strings(v, where, TOPIC, "segment")
                for segment in value or ():
                    if segment not in SEGMENTS:
                        self.error(v, where, f"unknown segment {segment!r} (expected one of: {', '.join(SEGMENTS)})")
                        value = None
            elif key == "stage":
                value = self.strings(v, where, STAGE, "stage")
            else:  # topic
                value = self.strings(v, where, TOPIC, "topic")
            if value is None:
                ok = False
            values[key] = value
        if ok and values.get("deals_min") is not None and values.get("deals_max") is not None \
                and values["deals_min"] > values["deals_max"]:
            self.error(node, path, "deals_min is greater than deals_max: the rule can never match")
            ok = False
        return Condition(**values) if ok else None

    def route(self, node: Node, path: str) -> Route | None:
        items = self.mapping(node, path, ROUTE_KEYS)
        if items is None:
            return None
        parts = {key: v for key, _k, v in items}
        if ("department" in parts) == ("to" in parts):
            self.error(node, path, "give exactly one of department: CODE or to: "
                                   f"{' / '.join(TARGETS)}")
            return None
        if "department" in parts:
            if "then" in parts:
                self.error(parts["then"], f"{path}.then", "then: only follows a personal target (to:)")
                return None
            code = self.department_ref(parts["department"], f"{path}.department")
            return Route(department=code) if code else None
        to = self.string(parts["to"], f"{path}.to", what="target")
        if to is not None and to not in TARGETS:
            self.error(parts["to"], f"{path}.to", f"unknown target {to!r} (expected one of: {', '.join(TARGETS)})")
            to = None
        then = None
        if "then" in parts:
            if to == "segment_department":
                self.error(parts["then"], f"{path}.then", "then: has no meaning after segment_department")
                return None
            then = self.department_ref(parts["then"], f"{path}.then")
            if then is None:
                return None
        return Route(to=to, then=then) if to else None

    def menu(self, node: Node, path: str) -> TopicMenu | None:
        items = self.mapping(node, path, MENU_KEYS)
        if items is None:
            return None
        parts = {key: (k, v) for key, k, v in items}
        ok = True
        for required in ("prompt", "options"):
            if required not in parts:
                self.error(node, path, f"missing {required}")
                ok = False
        prompt: tuple[str, ...] | None = None
        if "prompt" in parts:
            prompt_node = parts["prompt"][1]
            if not isinstance(prompt_node, SequenceNode) or not prompt_node.value:
                self.error(prompt_node, f"{path}.prompt", "expected a non-empty list of sound names")
            else:
                prompt = self.strings(prompt_node, f"{path}.prompt", SOUND, "sound name")
            ok = ok and prompt is not None
        options: list[MenuOption] = []
        if "options" in parts:
            option_items = self.mapping(parts["options"][1], f"{path}.options")
            if option_items is None:
                ok = False
            elif not option_items:
                self.error(parts["options"][1], f"{path}.options", "at least one option is needed")
                ok = False
            for digit, key_node, topic_node in option_items or []:
                where = f"{path}.options.{digit}"
                text = str(digit) if isinstance(digit, (int, str)) and not isinstance(digit, bool) else ""
                if len(text) != 1 or text not in "0123456789":
                    self.error(key_node, where, f"menu digit {digit!r} must be one of 0-9")
                    ok = False
                    continue
                topic = self.string(topic_node, where, TOPIC, "topic")
                if topic is None:
                    ok = False
                    continue
                options.append(MenuOption(text, topic))
        timeout = 5.0
        if "timeout" in parts:
            value = self.number(parts["timeout"][1], f"{path}.timeout", 1, 30)
            ok = ok and value is not None
            timeout = value or timeout
        default = None
        if "default" in parts:
            default_node = parts["default"][1]
            if not (isinstance(default_node, ScalarNode) and self.value(default_node) is None):
                default = self.string(default_node, f"{path}.default", TOPIC, "topic")
                if default is not None and options and default not in {o.topic for o in options}:
                    self.error(default_node, f"{path}.default", f"default topic {default!r} is not one of the options")
                    default = None
                ok = ok and default is not None
        if not ok:
            return None
        return TopicMenu(prompt=prompt or (), options=tuple(options), timeout=timeout, default_topic=default)


def check(text: str, filename: str = "rules.yaml") -> tuple[Ruleset | None, list[str]]:
    """(ruleset, []) when valid, (None, errors) otherwise; errors in line order."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = " ".join(filter(None, (exc.context, exc.problem))) or "YAML syntax error"
        return None, [f"{filename}:{line}: YAML syntax error: {what}"]
    except yaml.YAMLError as exc:
        return None, [f"{filename}:1: YAML error: {exc}"]
    if root is None:
        return None, [f"{filename}:1: the file is empty"]
    parser = _Parser(filename)
    try:
        ruleset = parser.parse(root)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        return None, [f"{filename}:{mark.line + 1 if mark else 1}: {exc.problem}"]
    errors = [e.text for e in sorted(parser.errors, key=lambda e: e.line)]
    return (None, errors) if errors else (ruleset, [])


def parse(text: str, filename: str = "rules.yaml") -> Ruleset:
    ruleset, errors = check(text, filename)
    if errors or ruleset is None:
        raise RulesError(errors)
    return ruleset


def load(path: str | Path = DEFAULT_FILE) -> tuple[Ruleset, str]:
    """(ruleset, source text) of a rules file; RulesError when invalid."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    return parse(text, path.name), text
