"""Wiring of the calls capability: which flow a channel entering our Stasis app gets.

The dialplan passes the flow name as the first Stasis argument (``Stasis(ivr,inbound,EXTEN)``):
``inbound`` (the public number: routing), ``feature`` / ``summon`` (operators' feature codes),
``notice`` (a call we placed to tell something), ``greeting`` (the self-test greeting flow).
An unknown or missing name (e.g. an orphaned ``operator_leg`` after a restart) is refused
politely (hung up, logged) instead of crashing.
"""

from __future__ import annotations

import logging

from ivr.ari import AriClient, AriError, AriEvent, AriUnavailable, CallSession
from ivr.config import Settings

from .greeting import GreetingCall
from .journal import CallJournal

log = logging.getLogger("ivr.calls")


class CallsPlugin:
    def __init__(self, settings: Settings, ari: AriClient, journal: CallJournal, inbound=None):
        self.settings = settings
        self.ari = ari
        self.journal = journal
        self.inbound = inbound  # ivr.inbound.plugin.InboundPlugin

    async def start_flow(self, session: CallSession, first_event: AriEvent) -> None:
        flow = first_event.args[0] if first_event.args else ""
        if self.inbound is not None and flow in ("inbound", "feature", "summon", "notice"):
            await getattr(self.inbound, flow)(session, first_event)
            return
        if flow in ("inbound", "greeting"):
            call = GreetingCall(
                self.ari, self.journal, session,
                greeting_sounds=self.settings.greeting_sounds,
                language=self.settings.sound_language,
                digit_timeout=self.settings.digit_timeout,
            )
            await call.run(first_event)
            return
        log.warning("event=unknown_flow flow=%r action=hangup", flow[:40])
        try:
            await self.ari.hangup(session.channel_id)
        except (AriError, AriUnavailable):
            pass
