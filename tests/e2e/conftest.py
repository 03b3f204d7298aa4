"""Fixtures of the inbound end-to-end tests (module-scoped: each module gets a fresh floor and,
through the ``controller`` fixture, its own controller)."""

from __future__ import annotations

import asyncio

import pytest

from ivr.phones.sipp import SippAnswerer
from tests.e2e.floor import OPERATORS, RULES, Floor, _apply_rules, _sql


@pytest.fixture(scope="module")
async def floor(request, asterisk, e2e_settings, database_url, tmp_path_factory):
    from ivr.stack.operators import sync_operators

    _sql(database_url, "TRUNCATE call_attempts, violations, callback_requests, summons, operator_events, contacts, "
                       "deals, client_phones, calls RESTART IDENTITY CASCADE")
    _sql(database_url, "DELETE FROM clients")
    _sql(database_url, "DELETE FROM operators")
    await asyncio.to_thread(_apply_rules, database_url, getattr(request.module, "RULES", RULES))
    workdir = tmp_path_factory.mktemp("floor")
    phones: dict[str, SippAnswerer] = {}
    for ext, (name, dept, mode) in OPERATORS.items():
        phone = SippAnswerer(mode=mode, hold=1.5, workdir=workdir)
        await phone.start()
        phones[ext] = phone
        _sql(database_url,
             "INSERT INTO operators (name, extension, department_id, sip_contact, status) VALUES "
             "(:n, :e, (SELECT id FROM departments WHERE code = :d), :c, 'available')",
             n=name, e=ext, d=dept, c=phone.uri)
    await asyncio.to_thread(sync_operators, e2e_settings, database_url)
    yield Floor(database_url, phones)
    for phone in phones.values():
        await phone.stop()


@pytest.fixture(scope="module")
async def routed(floor, controller):
    """The controller (module-scoped) started after the floor exists."""
    return floor



