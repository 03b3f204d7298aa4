"""Operators' phones in Asterisk: PJSIP endpoints and dialplan entries generated from the
operators table, written with the rest of the config and reloaded without a restart.

An operator without a SIP secret gets a generated one here (stored in the database, never a
default). Calls in progress survive: only res_pjsip and the dialplan are reloaded.
"""

from __future__ import annotations

import logging
import secrets

from sqlalchemy import select, update

from ivr.config import Settings
from ivr.stack.asterisk import AsteriskInstance
from ivr.stack.render import OperatorEndpoint
from models.db import make_engine
from models.tables import Operator

log = logging.getLogger("ivr.stack.operators")


def load_operator_endpoints(database_url: str) -> list[OperatorEndpoint]:
    """All operators as endpoints; generates and stores missing SIP secrets."""
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            missing = conn.execute(select(Operator.id).where(Operator.sip_secret.is_(None))).scalars().all()
            for op_id in missing:
                conn.execute(update(Operator).where(Operator.id == op_id)
                             .values(sip_secret=secrets.token_urlsafe(18)))
            rows = conn.execute(select(Operator.extension, Operator.name, Operator.sip_secret, Operator.sip_contact)
                                .order_by(Operator.extension)).all()
    finally:
        engine.dispose()
    return [OperatorEndpoint(extension=r.extension, name=display_name(r.name), secret=r.sip_secret,
                             contact=r.sip_contact) for r in rows]


def display_name(name: str) -> str:
    """The operator's name as a phone display name: characters that config files cannot hold
    are dropped (the database keeps the full name)."""
    kept = "".join(ch for ch in name if ch.isalnum() or ch in " ._-").strip(" ._-")
    return kept[:60] or "Operator"


def sync_operators(settings: Settings, database_url: str) -> int:
    """Render the config with the operators of the database and reload PJSIP and the dialplan
    of the running instance. Returns the number of operator endpoints."""
    endpoints = load_operator_endpoints(database_url)
    instance = AsteriskInstance(settings)
    with instance.config_lock():
        instance.install_config(endpoints)
        if instance.is_running():
            instance.cli("module reload res_pjsip.so")
            instance.cli("dialplan reload")
    log.info("event=operators_synced endpoints=%d instance=%s", len(endpoints), instance.name)
    return len(endpoints)
