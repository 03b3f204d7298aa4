"""The parsed routing rules file and the decision: ``Ruleset.decide(facts, now) -> RouteDecision``.

Pure: no I/O, no clock (``now`` is an argument), so every business rule is a unit test.
The YAML side lives in routing.loader; ``to_json``/``from_json`` give the form stored in
``ruleset_versions.parsed`` that the controller reloads without YAML.

How ``decide`` works (docs/routing.md has the long version):
1. Degraded facts (the database could not be asked): only rules with ``degraded: true`` in their
   ``when`` are considered; if none matches, ``degraded_default`` sends the call to
   ``settings.default_department``.
2. Otherwise the rules are tried in file order; the first whose ``when`` holds fires. No match:
   rule ``default`` -> ``settings.default_department``.
3. The rule's target department is resolved; if it is closed now, the decision is
   ``closed=True`` with ``reopens_at`` and no steps (the controller takes a callback request).
4. A rule with a ``menu`` and no topic yet returns the menu and no steps; the controller asks,
   calls ``facts.with_topic(topic)`` and decides again (the menu is then skipped).
5. The ladder: the personal manager (assigned operator or active-sales manager) for
   ``reaction_standard_seconds`` (``reaction_standard=True``), then the department for its
   ``max_wait``, then the department's ``fallback`` for the fallback's ``max_wait`` (left out
   when the fallback is closed now). Without a personal manager the ladder starts at the
   department.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from routing import hours as hours_mod
from routing.facts import CallerFacts, MenuOption, RingStep, RouteDecision, TopicMenu

FORMAT = 1
# Personal targets of ``route.to``.
TARGETS = ("assigned_operator", "active_sales_manager", "client_operator", "segment_department")


@dataclass(frozen=True)
class DepartmentSpec:
    code: str
    name: str
    strategy: str = "longest_idle"
    ring_timeout: int = 15          # seconds one operator rings before the next one is tried
    max_wait: int = 60              # seconds the department step lasts in total
    wrapup_seconds: int = 10        # after-call work before the operator gets the next call
    fallback: str | None = None     # department code tried after this one
    timezone: str = "Europe/Moscow"
    hours: tuple[hours_mod.Ranges, ...] | None = None  # 7 weekdays (Monday first); None: 24/7
    holidays: str | None = "RU"     # "RU" (holidays.Russia) or None
    closed_dates: tuple[str, ...] = ()                  # ISO dates closed all day
    open_dates: tuple[tuple[str, hours_mod.Ranges], ...] = ()  # (ISO date, ranges) overrides

    def is_open(self, now: datetime) -> bool:
        return hours_mod.is_open(self, now)

    def next_opening(self, now: datetime) -> datetime | None:
        return hours_mod.next_opening(self, now)


@dataclass(frozen=True)
class AutopauseSettings:
    misses: int = 1                 # missed offers in a row before the operator is paused
    ring_seconds: int = 15          # an offer rung this long without answer counts as a miss


@dataclass(frozen=True)
class SummonSettings:
    department: str = "current_sales"   # whose managers a retail consultant summons
    confirm_minutes: float = 4          # the manager must confirm arrival within this


@dataclass(frozen=True)
class RoutingSettings:
    default_department: str = "current_sales"
    active_sales_department: str = "active_sales"
    first_deal_threshold: int = 1
    reaction_standard_seconds: float = 20.0
    autopause: AutopauseSettings = field(default_factory=AutopauseSettings)
    summon: SummonSettings = field(default_factory=SummonSettings)


@dataclass(frozen=True)
class Condition:
    """All set fields must hold; None means "any"."""

    known: bool | None = None
    segment: tuple[str, ...] | None = None
    stage: tuple[str, ...] | None = None
    has_deals: bool | None = None
    deals_min: int | None = None
    deals_max: int | None = None
    called_by_active_sales: bool | None = None
    has_assigned_operator: bool | None = None
    topic: tuple[str, ...] | None = None
    degraded: bool | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in self.__dataclass_fields__)

    def matches(self, facts: CallerFacts, threshold: int) -> bool:
        checks = (
            (self.known, lambda: facts.known == self.known),
            (self.segment, lambda: facts.segment in self.segment),
            (self.stage, lambda: facts.stage in self.stage),
            (self.has_deals, lambda: (facts.deals_count >= threshold) == self.has_deals),
            (self.deals_min, lambda: facts.deals_count >= self.deals_min),
            (self.deals_max, lambda: facts.deals_count <= self.deals_max),
            (self.called_by_active_sales, lambda: (facts.active_sales_manager is not None)
             == self.called_by_active_sales),
            (self.has_assigned_operator, lambda: (facts.assigned_operator is not None)
             == self.has_assigned_operator),
            (self.topic, lambda: facts.topic is not None and facts.topic in self.topic),
            (self.degraded, lambda: facts.degraded == self.degraded),
        )
        return all(check() for value, check in checks if value is not None)

    def describe(self) -> str:
        parts = []
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, tuple):
                value = "|".join(value)
            elif isinstance(value, bool):
                value = str(value).lower()
            parts.append(f"{name}={value}")
        return ", ".join(parts) or "always"


@dataclass(frozen=True)
class Route:
    department: str | None = None   # a fixed department, or
    to: str | None = None           # one of TARGETS
    then: str | None = None         # the department after the personal step


@dataclass(frozen=True)
class Rule:
    name: str
    when: Condition
    route: Route
    menu: TopicMenu | None = None


@dataclass(frozen=True)
class _Target:
    department: str
    kind: str | None = None         # assigned / active_sales
    operator: str | None = None
    note: str = ""


@dataclass(frozen=True)
class Ruleset:
    settings: RoutingSettings
    departments: dict[str, DepartmentSpec]
    segments: dict[str, str]
    rules: tuple[Rule, ...]

    # --- the decision ------------------------------------------------------------------------
    def decide(self, facts: CallerFacts, now: datetime) -> RouteDecision:
        threshold = self.settings.first_deal_threshold
        if facts.degraded:
            for rule in self.rules:
                if rule.when.degraded and rule.when.matches(facts, threshold):
                    return self._decide_rule(rule, facts, now, degraded=True)
            default = Rule("degraded_default", Condition(), Route(department=self.settings.default_department))
            return self._decide_rule(default, facts, now, degraded=True,
                                     why="database unavailable: default department")
        for rule in self.rules:
            if rule.when.matches(facts, threshold):
                return self._decide_rule(rule, facts, now)
        default = Rule("default", Condition(), Route(department=self.settings.default_department))
        return self._decide_rule(default, facts, now, why="no rule matched: default department")

    def _decide_rule(self, rule: Rule, facts: CallerFacts, now: datetime, *, degraded: bool = False,
                     why: str | None = None) -> RouteDecision:
        trail = [why or f"rule {rule.name} matched ({rule.when.describe()})"]
        target = self._target(rule.route, facts)
        if target.note:
            trail.append(target.note)
        spec = self.departments[target.department]
        if not spec.is_open(now):
            opening = spec.next_opening(now)
            reopens = opening.isoformat() if opening else None
            local = now.astimezone(hours_mod.ZoneInfo(spec.timezone))
            trail.append(f"{spec.code} closed at {local:%a %Y-%m-%d %H:%M} {spec.timezone}"
                         + (f", reopens {reopens}" if reopens else ", no opening within a year"))
            return RouteDecision(rule=rule.name, department=spec.code, closed=True, reopens_at=reopens,
                                 degraded=degraded, trail=tuple(trail))
        if rule.menu is not None and facts.topic is None:
            trail.append(f"ask the topic menu first ({', '.join(f'{o.digit}={o.topic}' for o in rule.menu.options)})")
            return RouteDecision(rule=rule.name, department=spec.code, menu=rule.menu, degraded=degraded,
                                 trail=tuple(trail))
        steps = self._ladder(target, spec, now)
        trail.append(f"rule {rule.name}: " + ", then ".join(_describe_step(s) for s in steps))
        return RouteDecision(rule=rule.name, department=spec.code, steps=steps, degraded=degraded,
                             trail=tuple(trail))

    def _known(self, code: str | None) -> str | None:
        return code if code in self.departments else None

    def _segment_department(self, facts: CallerFacts) -> tuple[str, str]:
        by_segment = self._known(self.segments.get(facts.segment)) if facts.segment else None
        if by_segment:
            return by_segment, ""
        return self.settings.default_department, (
            f"segment {facts.segment or 'unknown'} has no department: {self.settings.default_department}")

    def _target(self, route: Route, facts: CallerFacts) -> _Target:
        if route.department:
            return _Target(route.department)
        if route.to == "segment_department":
            department, note = self._segment_department(facts)
            return _Target(department, note=note)
        if route.to == "assigned_operator":
            department = route.then or self._known(facts.department) or self.settings.default_department
            if facts.assigned_operator:
                return _Target(department, "assigned", facts.assigned_operator)
            return _Target(department, note=f"no assigned operator: straight to {department}")
        if route.to == "active_sales_manager":
            department = route.then or self.settings.active_sales_department
            if facts.active_sales_manager:
                return _Target(department, "active_sales", facts.active_sales_manager)
            return _Target(department, note=f"no active-sales manager: straight to {department}")
        if route.to == "client_operator":
            if route.then:
                department, note = route.then, ""
            else:
                department, note = self._segment_department(facts)
            if facts.assigned_operator:
                return _Target(department, "assigned", facts.assigned_operator, note)
            if facts.active_sales_manager:
                return _Target(self.settings.active_sales_department if not route.then else department,
                               "active_sales", facts.active_sales_manager, note)
            return _Target(department, note=(note + "; " if note else "")
                           + f"no sales operator of his own: straight to {department}")
        raise ValueError(f"route has neither department nor a known target: {route}")

    def _ladder(self, target: _Target, spec: DepartmentSpec, now: datetime) -> tuple[RingStep, ...]:
        steps: list[RingStep] = []
        if target.operator:
            steps.append(RingStep(kind=target.kind or "assigned", department=spec.code, operator=target.operator,
                                  timeout=float(self.settings.reaction_standard_seconds), reaction_standard=True))
        steps.append(RingStep(kind="department", department=spec.code, timeout=float(spec.max_wait)))
        fallback = self.departments.get(spec.fallback) if spec.fallback else None
        if fallback is not None and fallback.code != spec.code and fallback.is_open(now):
            steps.append(RingStep(kind="fallback", department=fallback.code, timeout=float(fallback.max_wait)))
        return tuple(steps)

    # --- serialisation -----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        s = self.settings
        return {
            "format": FORMAT,
            "settings": {
                "default_department": s.default_department,
                "active_sales_department": s.active_sales_department,
                "first_deal_threshold": s.first_deal_threshold,
                "reaction_standard_seconds": s.reaction_standard_seconds,
                "autopause": {"misses": s.autopause.misses, "ring_seconds": s.autopause.ring_seconds},
                "summon": {"department": s.summon.department, "confirm_minutes": s.summon.confirm_minutes},
            },
            "departments": {code: _department_json(d) for code, d in self.departments.items()},
            "segments": dict(self.segments),
            "rules": [_rule_json(r) for r in self.rules],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Ruleset":
        if data.get("format") != FORMAT:
            raise ValueError(f"stored ruleset has format {data.get('format')!r}, this code reads {FORMAT}")
        s = data["settings"]
        settings = RoutingSettings(
            default_department=s["default_department"],
            active_sales_department=s["active_sales_department"],
            first_deal_threshold=int(s["first_deal_threshold"]),
            reaction_standard_seconds=float(s["reaction_standard_seconds"]),
            autopause=AutopauseSettings(**s["autopause"]),
            summon=SummonSettings(**s["summon"]),
        )
        departments = {code: _department_from_json(d) for code, d in data["departments"].items()}
        return cls(settings=settings, departments=departments, segments=dict(data["segments"]),
                   rules=tuple(_rule_from_json(r) for r in data["rules"]))


def _describe_step(step: RingStep) -> str:
    if step.kind == "assigned":
        return f"assigned operator {step.operator} for {step.timeout:g}s"
    if step.kind == "active_sales":
        return f"manager {step.operator} for {step.timeout:g}s"
    if step.kind == "fallback":
        return f"fallback {step.department} for {step.timeout:g}s"
    return f"{step.department} for {step.timeout:g}s"


def _ranges_json(ranges: hours_mod.Ranges) -> list[list[int]]:
    return [[start, end] for start, end in ranges]


def _ranges_from_json(ranges: list[list[int]]) -> hours_mod.Ranges:
    return tuple((int(start), int(end)) for start, end in ranges)


def _department_json(d: DepartmentSpec) -> dict[str, Any]:
    return {
        "code": d.code, "name": d.name, "strategy": d.strategy, "ring_timeout": d.ring_timeout,
        "max_wait": d.max_wait, "wrapup_seconds": d.wrapup_seconds, "fallback": d.fallback,
        "timezone": d.timezone,
        "hours": None if d.hours is None else [_ranges_json(day) for day in d.hours],
        "holidays": d.holidays, "closed_dates": list(d.closed_dates),
        "open_dates": [[day, _ranges_json(ranges)] for day, ranges in d.open_dates],
    }


def _department_from_json(d: dict[str, Any]) -> DepartmentSpec:
    return DepartmentSpec(
        code=d["code"], name=d["name"], strategy=d["strategy"], ring_timeout=int(d["ring_timeout"]),
        max_wait=int(d["max_wait"]), wrapup_seconds=int(d["wrapup_seconds"]), fallback=d["fallback"],
        timezone=d["timezone"],
        hours=None if d["hours"] is None else tuple(_ranges_from_json(day) for day in d["hours"]),
        holidays=d["holidays"], closed_dates=tuple(d["closed_dates"]),
        open_dates=tuple((day, _ranges_from_json(ranges)) for day, ranges in d["open_dates"]),
    )


def _rule_json(rule: Rule) -> dict[str, Any]:
    when = {name: (list(value) if isinstance(value, tuple) else value)
            for name in Condition.__dataclass_fields__ if (value := getattr(rule.when, name)) is not None}
    route = {k: v for k, v in (("department", rule.route.department), ("to", rule.route.to),
                               ("then", rule.route.then)) if v is not None}
    out: dict[str, Any] = {"name": rule.name, "when": when, "route": route}
    if rule.menu is not None:
        m = rule.menu
        out["menu"] = {"prompt": list(m.prompt), "options": [[o.digit, o.topic] for o in m.options],
                       "timeout": m.timeout, "default": m.default_topic}
    return out


def _rule_from_json(data: dict[str, Any]) -> Rule:
    when = {name: (tuple(value) if isinstance(value, list) else value) for name, value in data["when"].items()}
    menu = None
    if data.get("menu") is not None:
        m = data["menu"]
        menu = TopicMenu(prompt=tuple(m["prompt"]), options=tuple(MenuOption(d, t) for d, t in m["options"]),
                         timeout=float(m["timeout"]), default_topic=m["default"])
    return Rule(name=data["name"], when=Condition(**when), route=Route(**data["route"]), menu=menu)
