"""The values routing works on, shared by the client store (which produces CallerFacts), the rules
engine (CallerFacts -> RouteDecision) and the controller (which acts on a RouteDecision).

Plain frozen dataclasses, no I/O: the rules engine stays a pure, unit-testable function.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

SEGMENTS = ("retail", "small_wholesale", "wholesale", "large_wholesale")
STRATEGIES = ("longest_idle", "fewest_calls", "least_talk_time")


@dataclass(frozen=True)
class CallerFacts:
    """What the client store knows about the caller at the moment of the call."""

    e164: str | None                      # None: no usable caller ID (absent, anonymous, garbage)
    client_id: int | None = None          # None: unknown number
    full_name: str | None = None
    address_name: str | None = None       # "Пётр Николаевич"
    company: str | None = None
    segment: str | None = None            # one of SEGMENTS or None
    stage: str | None = None
    deals_count: int = 0
    department: str | None = None         # owning department code
    assigned_operator: str | None = None  # extension of the assigned operator
    # Extension of the active-sales manager whose outbound call to this client is the latest
    # contact before his first deal (None when there is none, or he already has deals).
    active_sales_manager: str | None = None
    topic: str | None = None              # chosen in the IVR topic menu, if any
    degraded: bool = False                # the database could not be asked: facts are empty

    @property
    def known(self) -> bool:
        return self.client_id is not None

    def with_topic(self, topic: str | None) -> "CallerFacts":
        return replace(self, topic=topic)


@dataclass(frozen=True)
class MenuOption:
    digit: str                            # "1".."9"
    topic: str                            # purchase / documents / delivery / ...


@dataclass(frozen=True)
class TopicMenu:
    """An optional "press 1 for ..." menu. ``prompt`` is a list of Asterisk sound names (language
    ru_RU_f_IvrvoiceRU) played in order; the chosen topic is put in CallerFacts.topic and the
    rules are evaluated again."""

    prompt: tuple[str, ...]
    options: tuple[MenuOption, ...]
    timeout: float = 5.0
    default_topic: str | None = None      # topic when nothing (or garbage) is pressed

    def topic_for(self, digit: str | None) -> str | None:
        for option in self.options:
            if option.digit == digit:
                return option.topic
        return self.default_topic


@dataclass(frozen=True)
class RingStep:
    """One step of the escalation ladder: ring ``operator`` (an extension) alone, or the
    department's operators by its strategy, for at most ``timeout`` seconds in total."""

    kind: str                             # assigned / active_sales / department / fallback
    department: str                       # department code (for an operator step: his department)
    operator: str | None = None           # extension, for assigned / active_sales steps
    timeout: float = 30.0
    # True for a manager's personal step: missing it is a reaction-standard violation.
    reaction_standard: bool = False


@dataclass(frozen=True)
class RouteDecision:
    rule: str                             # the name of the rule that fired
    department: str                       # the target department (for the call log)
    steps: tuple[RingStep, ...] = ()      # escalation ladder, in order
    menu: TopicMenu | None = None         # ask the topic first, then decide again
    closed: bool = False                  # the department is closed now (after hours)
    reopens_at: str | None = None         # ISO time it opens again (for the message/log)
    degraded: bool = False
    trail: tuple[str, ...] = field(default_factory=tuple)  # human-readable reasoning
