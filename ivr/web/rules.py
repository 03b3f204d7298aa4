"""/rules (admin only): the routing rules YAML (with department hours) in a text area.

"Check" runs routing.loader.check and shows every error with its line number next to the text;
"Apply" checks again and goes through routing.store.apply_ruleset (a new active version, author
"web:<login>") and shows the diff; the history has a rollback button per version
(routing.store.rollback) — the same path as `ivr routing check|apply|rollback`."""

from __future__ import annotations

import asyncio
import difflib
import re

from aiohttp import web

from ivr.web.app import SYNC_ENGINE, render
from ivr.web.auth import PAGE_ROLES, require_role
from routing import store
from routing.loader import DEFAULT_FILE, check

FILENAME = "rules.yaml"
MAX_SOURCE = 256 * 1024
DAYS = ("пн", "вт", "ср", "чт", "пт", "сб", "вс")
_LINE_RE = re.compile(r"^[^:]*:(\d+): (.*)$", re.S)
admin_only = require_role(*PAGE_ROLES["rules"])


def split_errors(errors: list[str]) -> list[tuple[int | None, str]]:
    """'rules.yaml:12: message' -> (12, 'message')."""
    out = []
    for e in errors:
        m = _LINE_RE.match(e)
        out.append((int(m.group(1)), m.group(2)) if m else (None, e))
    return out


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def hours_table(ruleset) -> list[dict]:
    """Per department: name, timezone and the week's hours as text ('круглосуточно' without hours)."""
    rows = []
    for spec in ruleset.departments.values():
        if spec.hours is None:
            week = ["круглосуточно"] * 7
        else:
            week = [", ".join(f"{_hhmm(a)}-{_hhmm(b)}" for a, b in day) or "закрыто" for day in spec.hours]
        rows.append({"code": spec.code, "name": spec.name, "timezone": spec.timezone, "week": week,
                     "closed_dates": spec.closed_dates})
    return rows


def _diff(old: str, new: str, old_label: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=old_label, tofile="web"))


async def _state(request: web.Request) -> dict:
    engine = request.app[SYNC_ENGINE]
    current = await asyncio.to_thread(store.active_source, engine)
    versions = await asyncio.to_thread(store.list_versions, engine, 30)
    return {"current": current, "versions": versions}


async def _page(request: web.Request, *, source: str | None = None, errors=None, message: str | None = None,
                diff: str | None = None, status: int = 200) -> web.Response:
    state = await _state(request)
    current = state["current"]
    if source is None:
        source = current[1] if current else DEFAULT_FILE.read_text(encoding="utf-8")
    ruleset, check_errors = check(source, FILENAME)
    return render(request, "rules.html", {
        "source": source, "errors": split_errors(errors or []), "error_lines": {n for n, _ in split_errors(errors or [])},
        "message": message, "diff": diff, "versions": state["versions"],
        "current_version": current[0] if current else None,
        "hours": hours_table(ruleset) if ruleset is not None and not check_errors else [],
        "source_lines": source.splitlines(),
    }, status=status)


@admin_only
async def rules_page(request: web.Request) -> web.Response:
    return await _page(request, message=request.query.get("msg"))


async def _source(request: web.Request) -> str:
    form = await request.post()
    source = str(form.get("source", "")).replace("\r\n", "\n")
    if len(source) > MAX_SOURCE:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_SOURCE, actual_size=len(source))
    return source


@admin_only
async def rules_check(request: web.Request) -> web.Response:
    source = await _source(request)
    ruleset, errors = check(source, FILENAME)
    if errors:
        return await _page(request, source=source, errors=errors, status=422)
    return await _page(request, source=source,
                       message=f"Ошибок нет: {len(ruleset.rules)} правил, {len(ruleset.departments)} отделов")


@admin_only
async def rules_apply(request: web.Request) -> web.Response:
    source = await _source(request)
    ruleset, errors = check(source, FILENAME)
    if errors:
        return await _page(request, source=source, errors=errors, status=422,
                           message="Не применено: исправьте ошибки")
    engine = request.app[SYNC_ENGINE]
    current = await asyncio.to_thread(store.active_source, engine)
    if current is not None and store.sha256_of(current[1]) == store.sha256_of(source):
        return await _page(request, source=source, message=f"Без изменений: версия {current[0]} уже такая")
    diff = _diff(current[1] if current else "", source, f"version {current[0]}" if current else "nothing applied")
    version = await asyncio.to_thread(store.apply_ruleset, engine, ruleset, source, f"web:{request['user'].login}")
    return await _page(request, source=source, diff=diff,
                       message=f"Применена версия {version}: {len(ruleset.rules)} правил, "
                               f"{len(ruleset.departments)} отделов")


@admin_only
async def rules_rollback(request: web.Request) -> web.Response:
    raw = request.match_info["version"]
    if not raw.isdigit() or len(raw) > 9:
        raise web.HTTPNotFound()
    engine = request.app[SYNC_ENGINE]
    before = await asyncio.to_thread(store.active_source, engine)
    try:
        await asyncio.to_thread(store.rollback, engine, int(raw))
    except KeyError:
        raise web.HTTPNotFound() from None
    after = await asyncio.to_thread(store.active_source, engine)
    diff = _diff(before[1] if before else "", after[1] if after else "",
                 f"version {before[0]}" if before else "nothing applied")
    return await _page(request, diff=diff, message=f"Версия {raw} снова действует")


def setup(app: web.Application) -> None:
    app.router.add_get("/rules", rules_page)
    app.router.add_post("/rules/check", rules_check)
    app.router.add_post("/rules/apply", rules_apply)
    app.router.add_post("/rules/rollback/{version}", rules_rollback)
