"""What the product relies on in a running Asterisk, asked through CLI commands.

Used by ``check`` (the throw-away instance, over ``asterisk -rx``) and by ``apply``'s smoke
check (the live instance, over AMI). Each function takes ``run(command) -> output`` and
returns a list of problems (empty: fine).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from ivr.stack.render import FEATURE_CODES

Run = Callable[[str], str]

_ENDPOINT_RE = re.compile(r"^\s*Endpoint:\s+([^\s/<]+)", re.M)
_EXTEN_RE = re.compile(r"^\s*'([^']+)' =>", re.M)
# Lines of Asterisk's log that mean the configuration was not understood. Asterisk logs most
# parse problems as WARNING (a bad line is skipped, the rest loads), so both levels count.
_LOG_PROBLEM_RE = re.compile(r"\b(ERROR|WARNING)\[\d+\]")
# Warnings that a correct configuration also produces in the chroot (not about config).
_BENIGN = (
    # Loading ~500 endpoints at once queues a device-state event each; Asterisk warns that the
    # queue passed 500. About load at start-up, not about the configuration (found by
    # scripts/bench_dialplan.py).
    "taskprocessor.c: Taskprocessor",
)


@dataclass
class Expectations:
    """What must exist: the public number enters Stasis from [from-carrier], the feature codes
    are in [operators], every operator has an endpoint and an extension, the carrier endpoint."""

    public_number: str
    ari_app: str
    operators: Sequence[str] = ()
    feature_codes: Sequence[str] = field(default_factory=lambda: tuple(FEATURE_CODES))

    @property
    def dialled_public(self) -> str:
        return self.public_number.lstrip("+")


def _stasis_in(output: str, app: str) -> bool:
    return re.search(rf"\bStasis\(\s*{re.escape(app)}\s*[,)]", output) is not None


def endpoints(run: Run) -> set[str]:
    return set(_ENDPOINT_RE.findall(run("pjsip show endpoints")))


def context_extensions(run: Run, context: str) -> set[str] | None:
    """Extensions of ``context`` (None when the context does not exist)."""
    out = run(f"dialplan show {context}")
    if f"'{context}'" not in out or "There is no existence" in out:
        return None
    return set(_EXTEN_RE.findall(out))


# Applications that would let a caller leave the context towards a dialling application.
_ESCAPES_RE = re.compile(r"\b(Dial|Goto|GotoIf|GotoIfTime|Gosub|GosubIf|Macro|Originate|Page|Queue|"
                         r"DISA|ChanSpy|ExtenSpy|System|TrySystem|Exec|ExecIf)\(", re.I)
_DIAL_RE = re.compile(r"\bDial\(([^)]*)\)", re.I)


def toll_fraud_problems(run: Run) -> list[str]:
    """[from-carrier] only hands calls to Stasis (no dialling, jumping or include), and
    [operators] dials nothing but operators' own endpoints (never the trunk)."""
    problems: list[str] = []
    out = run("dialplan show from-carrier")
    for line in out.splitlines():
        if _ESCAPES_RE.search(line):
            problems.append(f"[from-carrier] must only enter Stasis, found: {' '.join(line.split())}")
        if re.match(r"\s*Include\s*=>", line):
            problems.append(f"[from-carrier] must not include other contexts: {' '.join(line.split())}")
    out = run("dialplan show operators")
    for line in out.splitlines():
        for target in _DIAL_RE.findall(line):
            first = target.split(",")[0]
            if not re.fullmatch(r"PJSIP/[0-9]{2,8}", first.strip()):
                problems.append(f"[operators] may dial operators only (PJSIP/<extension>), found Dial({target})")
        if re.match(r"\s*Include\s*=>", line):
            problems.append(f"[operators] must not include other contexts: {' '.join(line.split())}")
    return problems


def verify(run: Run, expect: Expectations, *, stop_early: bool = False) -> list[str]:
    # The public number first: when it is broken, apply rolls back without waiting for the rest.
    problems: list[str] = []
    out = run(f"dialplan show {expect.dialled_public}@from-carrier")
    if not _stasis_in(out, expect.ari_app):
        problems.append(f"the public number {expect.public_number} does not enter Stasis({expect.ari_app},...) "
                        f"from [from-carrier]: {' '.join(out.split())[:300]}")
        if stop_early:
            return problems
    problems += toll_fraud_problems(run)
    operators_ctx = context_extensions(run, "operators")
    if operators_ctx is None:
        problems.append("context [operators] is missing")
    else:
        for code in expect.feature_codes:
            out = run(f"dialplan show {code}@operators")
            if not _stasis_in(out, expect.ari_app):
                problems.append(f"feature code {code} in [operators] does not reach Stasis({expect.ari_app},...)")
        for ext in expect.operators:
            if ext not in operators_ctx:
                problems.append(f"operator extension {ext} is missing from [operators]")
    present = endpoints(run)
    for ext in ("carrier", *expect.operators):
        if ext not in present:
            problems.append(f"PJSIP endpoint {ext} is missing (pjsip show endpoints)")
    return problems


def log_problems(lines: Iterable[str]) -> list[str]:
    """ERROR/WARNING lines of an Asterisk log (start-up or reload)."""
    out = []
    for line in lines:
        if _LOG_PROBLEM_RE.search(line) and not any(b in line for b in _BENIGN):
            out.append(line.strip())
    return out
