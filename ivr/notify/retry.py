"""Retry policy of the confirmation robot: when to call a client again, and when to stop.

    policies = load_policies()                         # ivr/notify/policy.yaml (or a path)
    policy = policies.for_template("documents_sent")   # defaults + that template's overrides
    decision = next_attempt(policy, "busy", attempts_made=1, now=now, tz=tz,
                            window=policy.window, deadline=job.deadline)
    decision.kind    # "retry" | "final"
    decision.at      # UTC-aware time of the next attempt (retry), else None
    decision.result  # final only: "confirmed" | "not_received" | "exhausted" | "expired"
    decision.reason  # one line for the attempt log

Order of the rules (first match wins):
1. the client acted (``confirmed``, ``not_received``) -> final with that result;
2. ``attempts_made`` (attempts already made for the job, the one just finished included)
   reached the barrier -> final ``exhausted``;
3. the next slot - ``now`` + the outcome's delay, or the next working day at a time, moved into
   the client's call window - is after the deadline -> final ``expired``;
4. otherwise retry at that slot.

An outcome the policy does not know is a ValueError: the dialer maps Asterisk causes onto
OUTCOMES, and an unmapped cause is a bug to see, not a silent retry. Pure: ``now`` is passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping
from zoneinfo import ZoneInfo

import yaml

from ivr.notify.window import CallWindow

__all__ = ["ACTIONS", "DEFAULT_POLICY_FILE", "OUTCOMES", "TTS_ENGINES", "Decision", "NextWorkingDay", "PolicyError",
           "PolicySet", "RetryPolicy", "load_policies", "next_attempt", "parse_policies",
           "parse_schedule"]

# Outcomes of an attempt that lead to another attempt (subject to barrier and deadline).
OUTCOMES = ("busy", "no_answer", "congestion", "failure", "hangup_during_prompt", "no_action",
            "sms_undelivered", "smsc_unavailable")
# The client did what was asked: the job is done whatever the counters say.
ACTIONS = ("confirmed", "not_received")
DEFAULT_POLICY_FILE = Path(__file__).with_name("policy.yaml")


class PolicyError(ValueError):
    """A bad policy file; the message names the key and, when known, the line."""


@dataclass(frozen=True)
class NextWorkingDay:
    """Schedule at ``at`` local time on the client's next working day (moved into the window)."""
    at: time = time(10)

    def __str__(self) -> str:
        return f"next_working_day {self.at:%H:%M}"


Schedule = timedelta | NextWorkingDay

_DURATION = re.compile(r"^(?:(\d+)h)?\s*(?:(\d+)m(?:in)?)?\s*(?:(\d+)s)?$")
_NWD = re.compile(r"^next_working_day(?:[ _@]+(\d{1,2}):(\d{2}))?$")
_HHMM = re.compile(r"^(\d{1,2}):(\d{2})$")


def parse_time(text: str) -> time:
    match = _HHMM.match(str(text).strip())
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValueError(f"bad time {text!r}: expected HH:MM")
    return time(int(match[1]), int(match[2]))


def parse_schedule(value: Any) -> Schedule:
    """``"15m"``, ``"2h"``, ``"1h30m"``, ``"90s"``, a number of minutes, or
    ``"next_working_day 10:00"`` (also ``next_working_day_10:00``; bare: 10:00)."""
    if isinstance(value, (timedelta, NextWorkingDay)):
        return value
    if isinstance(value, bool):
        raise ValueError(f"bad delay {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"bad delay {value!r}: must be positive minutes")
        return timedelta(minutes=value)
    text = str(value).strip()
    nwd = _NWD.match(text)
    if nwd:
        return NextWorkingDay(parse_time(f"{nwd[1]}:{nwd[2]}") if nwd[1] else time(10))
    match = _DURATION.match(text)
    if not text or not match or not any(match.groups()):
        raise ValueError(f"bad delay {value!r}: expected like 15m, 2h, 1h30m or "
                         "\"next_working_day 10:00\"")
    h, m, s = (int(g or 0) for g in match.groups())
    delta = timedelta(hours=h, minutes=m, seconds=s)
    if delta <= timedelta(0):
        raise ValueError(f"bad delay {value!r}: must be positive")
    return delta


def _format(schedule: Schedule) -> str:
    if isinstance(schedule, NextWorkingDay):
        return str(schedule)
    minutes = int(schedule.total_seconds() // 60)
    return f"+{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"+{minutes}m"


DEFAULT_DELAYS: Mapping[str, Schedule] = MappingProxyType({
    "busy": timedelta(minutes=15),
    "no_answer": timedelta(hours=2),
    "congestion": timedelta(minutes=10),
    "failure": timedelta(minutes=30),
    "hangup_during_prompt": timedelta(hours=1),
    "sms_undelivered": timedelta(hours=1),     # the SMSC's receipt said UNDELIV / EXPIRED / REJECTD
    "smsc_unavailable": timedelta(minutes=5),  # could not hand the SMS over (SMSC down, throttled)
})


@dataclass(frozen=True)
class RetryPolicy:
    barrier: int = 5
    delays: Mapping[str, Schedule] = field(default_factory=lambda: dict(DEFAULT_DELAYS))
    no_action: Schedule = NextWorkingDay(time(10))
    window: CallWindow = CallWindow()
    # When the call attempts reach the barrier without an answer: send an SMS instead of ending
    # the job as exhausted (sms_attempts more attempts, SMS only).
    sms_after_calls: bool = False
    sms_attempts: int = 3
    # How the call asks: "keys" (press 1 / 2) or "callback" (the spoken "when is it convenient?"
    # dialog of ivr/notify/speech_dialog.py; keys work there too).
    dialog: str = "keys"
    # Which TTS renders this template's prompts: "festival" (Festival, espeak-ng fallback) or
    # "silero" (ivr/speech/silero.py, the model file from IVR_SILERO_MODEL; falls back to Festival).
    tts_engine: str = "festival"

    def __post_init__(self) -> None:
        if isinstance(self.barrier, bool) or not isinstance(self.barrier, int) or self.barrier < 1:
            raise ValueError(f"barrier must be a whole number >= 1, got {self.barrier!r}")
        delays = {k: parse_schedule(v) for k, v in self.delays.items()}
        unknown = sorted(set(delays) - set(OUTCOMES))
        if unknown:
            raise ValueError(f"unknown outcome(s) in delays: {', '.join(unknown)}; "
                             f"expected {', '.join(OUTCOMES)}")
        no_action = parse_schedule(delays.pop("no_action", self.no_action))
        merged = {**DEFAULT_DELAYS, **delays}
        object.__setattr__(self, "delays", MappingProxyType(merged))
        object.__setattr__(self, "no_action", no_action)

    def schedule(self, outcome: str) -> Schedule:
        if outcome == "no_action":
            return self.no_action
        if outcome not in self.delays:
            raise ValueError(f"unknown outcome {outcome!r}: expected one of "
                             f"{', '.join(OUTCOMES + ACTIONS)}")
        return self.delays[outcome]


@dataclass(frozen=True)
class Decision:
    kind: str                   # "retry" | "final"
    at: datetime | None         # retry: when, UTC-aware
    result: str | None          # final: confirmed | not_received | exhausted | expired
    reason: str


def next_attempt(policy: RetryPolicy, outcome: str, attempts_made: int, now: datetime,
                 tz: ZoneInfo, window: CallWindow | None = None,
                 deadline: datetime | None = None) -> Decision:
    """What to do after an attempt that ended with ``outcome``; see the module doc."""
    if now.tzinfo is None or (deadline is not None and deadline.tzinfo is None):
        raise ValueError("now and deadline must be timezone-aware")
    window = window or policy.window
    if outcome in ACTIONS:
        return Decision("final", None, outcome, f"client answered: {outcome}")
    schedule = policy.schedule(outcome)  # ValueError on an unknown outcome
    if attempts_made >= policy.barrier:
        return Decision("final", None, "exhausted",
                        f"{outcome}: {attempts_made} of {policy.barrier} attempts made")
    if isinstance(schedule, NextWorkingDay):
        at = window.next_working_day_at(now, tz, schedule.at)
        proposed = at
    else:
        proposed = (now + schedule).astimezone(timezone.utc)
        at = window.clamp(proposed, tz)
    moved = "" if at == proposed else ", moved into the call window"
    local = at.astimezone(tz)
    if deadline is not None and at > deadline:
        return Decision("final", None, "expired",
                        f"{outcome}: next slot {local:%Y-%m-%d %H:%M} {tz.key} is after the deadline")
    return Decision("retry", at, None,
                    f"{outcome}: {_format(schedule)}{moved} -> {local:%Y-%m-%d %H:%M} {tz.key}")


# --- the policy file -------------------------------------------------------------------------

_POLICY_KEYS = {"barrier", "delays", "window", "sms_after_calls", "sms_attempts", "dialog", "tts_engine"}
DIALOGS = ("keys", "callback")
TTS_ENGINES = ("festival", "silero")
_WINDOW_KEYS = {"start", "end", "working_days_only", "holidays"}


@dataclass(frozen=True)
class PolicySet:
    default: RetryPolicy
    templates: Mapping[str, RetryPolicy]

    def for_template(self, name: str) -> RetryPolicy:
        """The template's policy, or the defaults for a template without overrides."""
        return self.templates.get(name, self.default)


def _plain(loader: yaml.SafeLoader, node: yaml.Node, path: str, lines: dict[str, int]) -> Any:
    """Node tree -> Python values, recording the line of every key (``a.b.c`` -> line)."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(loader.construct_object(key_node))
            sub = f"{path}.{key}" if path else key
            if key in out:
                raise PolicyError(f"{sub}: line {key_node.start_mark.line + 1}: duplicate key")
            lines[sub] = key_node.start_mark.line + 1
            out[key] = _plain(loader, value_node, sub, lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_plain(loader, n, f"{path}[{i}]", lines) for i, n in enumerate(node.value)]
    if node.tag.endswith(":int") and ":" in node.value:
        return node.value  # YAML 1.1 reads 10:00 as the base-60 number 600; keep the text
    return loader.construct_object(node)


def _build(data: Any, path: str, base: RetryPolicy | None, lines: dict[str, int]) -> RetryPolicy:
    def fail(key: str, message: str) -> PolicyError:
        line = lines.get(key) or lines.get(path)
        return PolicyError(f"{key}: line {line}: {message}" if line else f"{key}: {message}")

    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise fail(path, "expected a mapping with barrier, delays, window")
    for key in data:
        if key not in _POLICY_KEYS:
            raise fail(f"{path}.{key}", f"unknown key; expected {', '.join(sorted(_POLICY_KEYS))}")
    base = base or RetryPolicy()
    barrier = data.get("barrier", base.barrier)
    if isinstance(barrier, bool) or not isinstance(barrier, int) or barrier < 1:
        raise fail(f"{path}.barrier", f"expected a whole number >= 1, got {barrier!r}")

    delays: dict[str, Schedule] = {**base.delays, "no_action": base.no_action}
    raw_delays = data.get("delays") or {}
    if not isinstance(raw_delays, dict):
        raise fail(f"{path}.delays", "expected a mapping outcome -> delay")
    for outcome, value in raw_delays.items():
        key = f"{path}.delays.{outcome}"
        if outcome not in OUTCOMES:
            raise fail(key, f"unknown outcome; expected {', '.join(OUTCOMES)}")
        try:
            delays[outcome] = parse_schedule(value)
        except ValueError as exc:
            raise fail(key, str(exc)) from None

    w = base.window
    window_args = dict(start=w.start, end=w.end, working_days_only=w.working_days_only,
                       holidays=w.holidays)
    raw_window = data.get("window") or {}
    if not isinstance(raw_window, dict):
        raise fail(f"{path}.window", "expected a mapping with start, end, working_days_only, holidays")
    for name, value in raw_window.items():
        key = f"{path}.window.{name}"
        if name not in _WINDOW_KEYS:
            raise fail(key, f"unknown key; expected {', '.join(sorted(_WINDOW_KEYS))}")
        try:
            if name in ("start", "end"):
                window_args[name] = parse_time(value)
            elif name == "working_days_only":
                if not isinstance(value, bool):
                    raise ValueError(f"expected true or false, got {value!r}")
                window_args[name] = value
            else:
                if value not in (None, "RU", "none"):
                    raise ValueError(f"expected RU or none, got {value!r}")
                window_args[name] = None if value == "none" else value
        except ValueError as exc:
            raise fail(key, str(exc)) from None
    try:
        window = CallWindow(**window_args)
    except ValueError as exc:
        raise fail(f"{path}.window", str(exc)) from None
    sms_after_calls = data.get("sms_after_calls", base.sms_after_calls)
    if not isinstance(sms_after_calls, bool):
        raise fail(f"{path}.sms_after_calls", f"expected true or false, got {sms_after_calls!r}")
    sms_attempts = data.get("sms_attempts", base.sms_attempts)
    if isinstance(sms_attempts, bool) or not isinstance(sms_attempts, int) or not 1 <= sms_attempts <= 10:
        raise fail(f"{path}.sms_attempts", f"expected a whole number 1..10, got {sms_attempts!r}")
    dialog = data.get("dialog", base.dialog)
    if dialog not in DIALOGS:
        raise fail(f"{path}.dialog", f"expected one of {', '.join(DIALOGS)}, got {dialog!r}")
    tts_engine = data.get("tts_engine", base.tts_engine)
    if tts_engine not in TTS_ENGINES:
        raise fail(f"{path}.tts_engine", f"expected one of {', '.join(TTS_ENGINES)}, got {tts_engine!r}")
    return RetryPolicy(barrier=barrier, delays=delays, window=window, sms_after_calls=sms_after_calls,
                       sms_attempts=sms_attempts, dialog=dialog, tts_engine=tts_engine)


def parse_policies(text: str, source: str = "policy.yaml") -> PolicySet:
    """Parse a policy file's text. Errors: PolicyError ``"<source>: <key>: line N: <what>"``."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from None
    lines: dict[str, int] = {}
    try:
        data = _plain(loader, node, "", lines) if node is not None else {}
        if not isinstance(data, dict):
            raise PolicyError("(top): line 1: expected a mapping with defaults and templates")
        for key in data:
            if key not in ("defaults", "templates"):
                raise PolicyError(f"{key}: line {lines[key]}: unknown key; "
                                  "expected defaults, templates")
        default = _build(data.get("defaults"), "defaults", None, lines)
        raw_templates = data.get("templates") or {}
        if not isinstance(raw_templates, dict):
            raise PolicyError(f"templates: line {lines['templates']}: expected a mapping "
                              "template name -> overrides")
        templates = {str(name): _build(value, f"templates.{name}", default, lines)
                     for name, value in raw_templates.items()}
    except PolicyError as exc:
        raise PolicyError(f"{source}: {exc}") from None
    return PolicySet(default=default, templates=MappingProxyType(templates))


def load_policies(path: Path | str | None = None) -> PolicySet:
    """The policy file (default: ivr/notify/policy.yaml); the built-in defaults if the default
    file is missing. A missing explicit path is an error."""
    file = Path(path) if path is not None else DEFAULT_POLICY_FILE
    if path is None and not file.exists():
        return PolicySet(default=RetryPolicy(), templates=MappingProxyType({}))
    return parse_policies(file.read_text(encoding="utf-8"), source=str(file))
