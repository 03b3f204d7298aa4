"""The client store: who is calling (caller facts for routing), the client card, contacts.

``caller_facts`` runs during a call, so it is one parameterised SQL round trip that touches only
indexes: ``client_phones.e164`` (unique) -> ``clients`` (pk) -> ``departments`` / ``operators``
(pk) and, for the active-sales manager, a LATERAL backward scan of ``contacts (client_id, at)``
that stops at the first matching row. The async functions take an ``AsyncConnection`` whose
transaction the caller owns (``async with engine.begin() as conn``).

``client_card`` is the synchronous read behind ``ivr client show``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import phonenumbers
from sqlalchemy import DateTime, Integer, String, bindparam, delete, or_, select, true
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session, aliased

from models.phones import normalize_phone, safe_text
from models.tables import Call, CallDirection, Client, ClientPhone, Contact, Deal, Department, Operator
from routing.facts import CallerFacts

POTENTIAL_STAGE = "potential"
NEW_CLIENT_NAME = "Новый клиент"
HISTORY_LIMIT = 50

# A caller ID name good enough to be a client's name: letters (any alphabet), digits, spaces and
# a little punctuation, at least one letter, not one of the placeholders carriers send.
_NAME_OK = re.compile(r"^[\w .,'\"()«»\-]+$")
_PLACEHOLDER_NAMES = {"unknown", "anonymous", "private", "restricted", "unavailable", "asterisk",
                      "неизвестный", "неизвестно", "скрыт", "скрытый номер"}


# --- caller lookup (during a call) -----------------------------------------------------------
def caller_facts_query(e164: str | None = None, *, active_sales_department: str | None = None,
                       first_deal_threshold: int | None = None, since: datetime | None = None):
    """The single SELECT behind caller_facts, with bound parameters ``e164``, ``active_sales``,
    ``threshold`` and ``since`` (values given here are bound; exposed so benchmarks can EXPLAIN it)."""
    stmt = _CALLER_FACTS
    values = {"e164": e164, "active_sales": active_sales_department, "threshold": first_deal_threshold,
              "since": since}
    given = {k: v for k, v in values.items() if v is not None}
    return stmt.params(**given) if given else stmt


def _build_caller_facts_query():
    assigned = aliased(Operator, name="assigned_op")
    manager = aliased(Operator, name="manager_op")
    manager_dept = aliased(Department, name="manager_dept")
    latest_active_sales = (
        select(manager.extension.label("extension"))
        .select_from(Contact)
        .join(manager, manager.id == Contact.operator_id)
        .join(manager_dept, manager_dept.id == manager.department_id)
        .where(Contact.client_id == Client.id,
               Contact.direction == CallDirection.outbound,
               Contact.at >= bindparam("since", type_=DateTime(timezone=True)),
               manager_dept.code == bindparam("active_sales", type_=String),
               Client.deals_count < bindparam("threshold", type_=Integer))
        .order_by(Contact.at.desc())
        .limit(1)
        .lateral("latest_active_sales")
    )
    return (
        select(Client.id, Client.full_name, Client.address_name, Client.company, Client.segment, Client.stage,
               Client.deals_count, Department.code.label("department"), assigned.extension.label("assigned"),
               latest_active_sales.c.extension.label("active_sales_manager"))
        .select_from(ClientPhone)
        .join(Client, Client.id == ClientPhone.client_id)
        .outerjoin(Department, Department.id == Client.department_id)
        .outerjoin(assigned, assigned.id == Client.assigned_operator_id)
        .outerjoin(latest_active_sales, true())
        .where(ClientPhone.e164 == bindparam("e164", type_=String))
    )


# Built once: during a call only the parameters change (SQLAlchemy's compiled cache and
# psycopg's automatic prepared statements then skip compiling and planning).
_CALLER_FACTS = _build_caller_facts_query()


async def caller_facts(conn: AsyncConnection, e164: str | None, *, active_sales_department: str = "active_sales",
                       first_deal_threshold: int = 1, active_sales_window_days: int = 90) -> CallerFacts:
    """What the store knows about the caller ``e164`` (already normalised), in one round trip.

    ``active_sales_manager`` is the extension of the operator of the latest outbound contact
    made by an operator of department ``active_sales_department`` within the last
    ``active_sales_window_days`` days, and only while the client has fewer than
    ``first_deal_threshold`` deals; otherwise None.
    """
    if e164 is None:
        return CallerFacts(e164=None)
    since = datetime.now(timezone.utc) - timedelta(days=active_sales_window_days)
    row = (await conn.execute(_CALLER_FACTS, {
        "e164": e164, "active_sales": active_sales_department, "threshold": first_deal_threshold,
        "since": since})).first()
    if row is None:
        return CallerFacts(e164=e164)
    return CallerFacts(
        e164=e164, client_id=row.id, full_name=row.full_name, address_name=row.address_name, company=row.company,
        segment=row.segment, stage=row.stage, deals_count=row.deals_count or 0, department=row.department,
        assigned_operator=row.assigned, active_sales_manager=row.active_sales_manager,
    )


# --- writes during a call --------------------------------------------------------------------
async def record_contact(conn: AsyncConnection, client_id: int, operator_id: int | None,
                         direction: CallDirection | str, at: datetime, call_uid: str | None,
                         result: str | None) -> int:
    """Add one row to the client's contact history; returns its id."""
    return (await conn.execute(
        pg_insert(Contact).values(
            client_id=client_id, operator_id=operator_id, direction=CallDirection(direction), at=at,
            call_uid=safe_text(call_uid, 64) if call_uid is not None else None,
            result=safe_text(result, 40) if result is not None else None)
        .returning(Contact.id))).scalar_one()


def potential_client_name(e164: str, caller_name: str | None) -> str:
    """The caller ID name when it looks like a person's or a company's name, else
    "Новый клиент +7 916 123-45-67"."""
    name = " ".join(str(caller_name or "").split())
    if (name and len(name) <= 80 and _NAME_OK.fullmatch(name) and any(ch.isalpha() for ch in name)
            and name.casefold() not in _PLACEHOLDER_NAMES):
        return name
    try:
        shown = phonenumbers.format_number(phonenumbers.parse(e164), phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    except phonenumbers.NumberParseException:
        shown = e164
    return f"{NEW_CLIENT_NAME} {shown}"


async def create_potential_client(conn: AsyncConnection, e164: str, caller_name: str | None) -> int:
    """The client id for the number ``e164``: the existing owner, or a new client card (stage
    potential, name from the caller ID name when it is a safe one) with the phone attached.

    Race-safe: the phone row is inserted with ON CONFLICT (e164) DO NOTHING, so of two
    simultaneous calls from one new number only one phone row wins; the loser removes the
    client row it just made and returns the winner's id (the conflict waits for the winner's
    commit, and the following SELECT sees it under READ COMMITTED).
    """
    e164 = normalize_phone(e164)  # raises PhoneNumberError: only a real number gets a card
    existing = (await conn.execute(select(ClientPhone.client_id).where(ClientPhone.e164 == e164))).scalar()
    if existing is not None:
        return existing
    new_id = (await conn.execute(
        pg_insert(Client).values(full_name=potential_client_name(e164, caller_name), stage=POTENTIAL_STAGE)
        .returning(Client.id))).scalar_one()
    won = (await conn.execute(
        pg_insert(ClientPhone).values(client_id=new_id, e164=e164)
        .on_conflict_do_nothing(index_elements=[ClientPhone.e164])
        .returning(ClientPhone.client_id))).scalar()
    if won is not None:
        return won
    await conn.execute(delete(Client).where(Client.id == new_id))
    return (await conn.execute(select(ClientPhone.client_id).where(ClientPhone.e164 == e164))).scalar_one()


# --- the client card (ivr client show) --------------------------------------------------------
@dataclass(frozen=True)
class DealLine:
    external_id: str | None
    closed_at: datetime | None
    amount: Decimal | None
    operator: str | None          # extension


@dataclass(frozen=True)
class ContactLine:
    at: datetime
    direction: str
    operator_name: str | None
    operator_extension: str | None
    result: str | None
    call_uid: str | None
    note: str | None


@dataclass(frozen=True)
class CallLine:
    started_at: datetime
    direction: str
    from_number: str | None
    to_number: str | None
    result: str | None
    department: str | None
    answered_by: str | None       # extension
    talk_seconds: float | None
    call_uid: str


@dataclass(frozen=True)
class ClientCard:
    id: int
    external_id: str | None
    full_name: str
    address_name: str | None
    company: str | None
    segment: str | None
    stage: str
    deals_count: int
    assigned_operator_name: str | None
    assigned_operator_extension: str | None
    department: str | None        # code
    department_name: str | None
    timezone: str | None
    notify_channel: str
    created_at: datetime | None
    updated_at: datetime | None
    phones: tuple[str, ...] = ()
    deals: tuple[DealLine, ...] = ()
    contacts: tuple[ContactLine, ...] = field(default=())   # newest first, at most HISTORY_LIMIT
    calls: tuple[CallLine, ...] = field(default=())         # newest first, at most HISTORY_LIMIT


def client_card(session_or_engine: Session | Engine | Connection, phone: str) -> ClientCard | None:
    """The card of the client owning ``phone`` (any format normalize_phone accepts; raises
    PhoneNumberError for a malformed one), or None for an unknown number."""
    e164 = normalize_phone(phone)
    if isinstance(session_or_engine, Engine):
        with session_or_engine.connect() as conn:
            return _card(conn, e164)
    if isinstance(session_or_engine, Session):
        return _card(session_or_engine.connection(), e164)
    return _card(session_or_engine, e164)


def _card(conn: Connection, e164: str) -> ClientCard | None:
    row = conn.execute(
        select(Client.__table__, Operator.name.label("op_name"), Operator.extension.label("op_ext"),
               Department.code.label("dept_code"), Department.name.label("dept_name"))
        .select_from(ClientPhone)
        .join(Client, Client.id == ClientPhone.client_id)
        .outerjoin(Operator, Operator.id == Client.assigned_operator_id)
        .outerjoin(Department, Department.id == Client.department_id)
        .where(ClientPhone.e164 == e164)).first()
    if row is None:
        return None
    client_id = row.id
    phones = tuple(conn.execute(select(ClientPhone.e164).where(ClientPhone.client_id == client_id)
                                .order_by(ClientPhone.id)).scalars())
    deal_op = aliased(Operator)
    deals = tuple(DealLine(d.external_id, d.closed_at, d.amount, d.extension) for d in conn.execute(
        select(Deal.external_id, Deal.closed_at, Deal.amount, deal_op.extension)
        .outerjoin(deal_op, deal_op.id == Deal.operator_id)
        .where(Deal.client_id == client_id)
        .order_by(Deal.closed_at.desc().nulls_last(), Deal.id.desc())))
    contacts = tuple(ContactLine(c.at, c.direction.value, c.name, c.extension, c.result, c.call_uid, c.note)
                     for c in conn.execute(
        select(Contact.at, Contact.direction, Contact.result, Contact.call_uid, Contact.note,
               Operator.name, Operator.extension)
        .outerjoin(Operator, Operator.id == Contact.operator_id)
        .where(Contact.client_id == client_id)
        .order_by(Contact.at.desc(), Contact.id.desc())
        .limit(HISTORY_LIMIT)))
    calls = tuple(CallLine(c.started_at, c.direction.value, c.from_number, c.to_number, c.result,
                           c.department_code, c.extension, c.talk_seconds, c.call_uid)
                  for c in conn.execute(
        select(Call.started_at, Call.direction, Call.from_number, Call.to_number, Call.result,
               Call.department_code, Call.talk_seconds, Call.call_uid, Operator.extension)
        .outerjoin(Operator, Operator.id == Call.answered_by_operator_id)
        .where(or_(Call.from_e164.in_(phones), Call.client_id == client_id) if phones
               else Call.client_id == client_id)
        .order_by(Call.started_at.desc(), Call.id.desc())
        .limit(HISTORY_LIMIT)))
    c = row
    return ClientCard(
        id=c.id, external_id=c.external_id, full_name=c.full_name, address_name=c.address_name, company=c.company,
        segment=c.segment, stage=c.stage, deals_count=c.deals_count, assigned_operator_name=row.op_name,
        assigned_operator_extension=row.op_ext, department=row.dept_code, department_name=row.dept_name,
        timezone=c.timezone, notify_channel=c.notify_channel, created_at=c.created_at, updated_at=c.updated_at,
        phones=phones, deals=deals, contacts=contacts, calls=calls,
    )
