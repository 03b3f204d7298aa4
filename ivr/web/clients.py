"""/clients: search by phone (any format) or by name / company; /clients/card?phone= shows the
card with the history of calls both ways — models.clients.client_card, what `ivr client show`
prints."""

from __future__ import annotations

import asyncio
from datetime import datetime

from aiohttp import web
from yarl import URL
from sqlalchemy import func, or_, select

from ivr.web.app import ENGINE, SYNC_ENGINE, render
from ivr.web.auth import PAGE_ROLES, require_role
from models.clients import client_card
from models.phones import PhoneNumberError, normalize_phone
from models.tables import Client, ClientPhone

SEARCH_LIMIT = 50
SEGMENT_NAMES = {"retail": "розница", "small_wholesale": "мелкий опт", "wholesale": "опт",
                 "large_wholesale": "крупный опт"}
can_see = require_role(*PAGE_ROLES["clients"])


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def history(card) -> list[dict]:
    """Contacts and calls merged, newest first (as format_card in ivr/clients/cli.py)."""
    rows: list[tuple[datetime, dict]] = []
    for c in card.contacts:
        rows.append((c.at, {"at": c.at, "kind": "contact", "direction": c.direction,
                            "who": f"{c.operator_name} ({c.operator_extension})" if c.operator_extension else "-",
                            "result": c.result or "-", "detail": c.note or "", "call_uid": c.call_uid or ""}))
    for c in card.calls:
        talk = f", разговор {c.talk_seconds:.0f} с" if c.talk_seconds is not None else ""
        rows.append((c.started_at, {
            "at": c.started_at, "kind": "call", "direction": c.direction, "who": c.answered_by or "-",
            "result": c.result or "-", "call_uid": c.call_uid,
            "detail": f"{c.from_number or '?'} → {c.to_number or '?'}, отдел {c.department or '-'}{talk}"}))
    rows.sort(key=lambda item: item[0], reverse=True)
    return [r for _, r in rows]


async def search(conn, query: str) -> list:
    """Clients whose phone is ``query`` (when it is a phone number) or whose name / company /
    address name contains it; each with its first phone."""
    first_phone = (select(ClientPhone.e164).where(ClientPhone.client_id == Client.id)
                   .order_by(ClientPhone.id).limit(1).scalar_subquery())
    q = select(Client.id, Client.full_name, Client.company, Client.stage, first_phone.label("phone"))
    try:
        e164 = normalize_phone(query)
    except PhoneNumberError:
        e164 = None
    if e164 is not None:
        q = q.where(Client.id.in_(select(ClientPhone.client_id).where(ClientPhone.e164 == e164)))
    else:
        pattern = f"%{_escape_like(query.strip())}%"
        q = q.where(or_(Client.full_name.ilike(pattern, escape="\\"), Client.company.ilike(pattern, escape="\\"),
                        Client.address_name.ilike(pattern, escape="\\")))
    return (await conn.execute(q.order_by(func.lower(Client.full_name), Client.id).limit(SEARCH_LIMIT))).all()


@can_see
async def clients_page(request: web.Request) -> web.StreamResponse:
    query = request.query.get("q", "").strip()[:100]
    results = []
    if query:
        async with request.app[ENGINE].connect() as conn:
            results = await search(conn, query)
        if len(results) == 1 and results[0].phone:
            raise web.HTTPSeeOther(str(URL("/clients/card").with_query(phone=results[0].phone)))
    return render(request, "clients.html", {"q": query, "results": results, "searched": bool(query)})


@can_see
async def card_page(request: web.Request) -> web.Response:
    phone = request.query.get("phone", "")
    try:
        e164 = normalize_phone(phone)
    except PhoneNumberError as exc:
        return render(request, "clients.html", {"q": phone, "results": [], "searched": True, "error": str(exc)},
                      status=400)
    card = await asyncio.to_thread(client_card, request.app[SYNC_ENGINE], e164)
    if card is None:
        return render(request, "clients.html", {"q": phone, "results": [], "searched": True,
                                                "error": f"Нет клиента с номером {e164}"}, status=404)
    return render(request, "client_card.html", {"card": card, "history": history(card),
                                                "segment_names": SEGMENT_NAMES})


def setup(app: web.Application) -> None:
    app.router.add_get("/clients", clients_page)
    app.router.add_get("/clients/card", card_page)
