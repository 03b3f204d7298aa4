"""Per-call event delivery.

The websocket reader must never wait for a call flow: a flow that talks to the database or
to ARI for a second would otherwise stall every other call's events (the measured failure of
aioari). So the reader only drops each event into the mailbox of the call it belongs to; each
call runs in its own task and reads its mailbox in order.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from ivr.logs import bind_call_id

from .client import Channel
from .events import CHANNEL_GONE, CHANNEL_RECOVERED, AriEvent

log = logging.getLogger("ivr.ari.dispatch")

_END_TYPES = frozenset({"StasisEnd", "ChannelDestroyed", CHANNEL_GONE})


class CallSession:
    """The mailbox of one call (one or more channels) and the task that runs its flow."""

    def __init__(self, dispatcher: "CallDispatcher", channel_id: str):
        self.dispatcher = dispatcher
        self.channel_id = channel_id
        self.mailbox: asyncio.Queue[AriEvent] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.channel_ids: set[str] = {channel_id}
        self.ended_channels: set[str] = set()

    def deliver(self, event: AriEvent) -> None:
        cid = event.channel_id
        if cid and event.type in _END_TYPES:
            self.ended_channels.add(cid)
        self.mailbox.put_nowait(event)

    def watch(self, channel_id: str) -> None:
        """Route another channel's events (e.g. a leg we originate) to this call."""
        self.channel_ids.add(channel_id)
        self.dispatcher._routes[channel_id] = self

    async def next_event(self, timeout: float | None = None) -> AriEvent | None:
        """The next event of this call, or None when ``timeout`` seconds pass first."""
        if not self.mailbox.empty():
            return self.mailbox.get_nowait()
        if timeout is None:
            return await self.mailbox.get()
        try:
            # asyncio.timeout is much cheaper than wait_for (no extra task per event).
            async with asyncio.timeout(timeout):
                return await self.mailbox.get()
        except TimeoutError:
            return None

    def is_ended(self, channel_id: str | None = None) -> bool:
        return (channel_id or self.channel_id) in self.ended_channels


FlowFactory = Callable[[CallSession, AriEvent], Awaitable[None]]


class CallDispatcher:
    """Routes ARI events to call sessions and starts a flow for each new call.

    ``flow_factory(session, first_event)`` is awaited in the call's own task; the first event
    is a StasisStart, or an IvrChannelRecovered for a call found after a reconnect.
    """

    def __init__(self, app: str, flow_factory: FlowFactory):
        self.app = app
        self.flow_factory = flow_factory
        self._routes: dict[str, CallSession] = {}
        self._sessions: set[CallSession] = set()
        self.events_dispatched = 0

    @property
    def active_calls(self) -> int:
        return len(self._sessions)

    def dispatch(self, event: AriEvent) -> None:
        """Called by the event reader for every event; never blocks."""
        self.events_dispatched += 1
        cid = event.channel_id
        if cid is None:
            return
        session = self._routes.get(cid)
        if session is None:
            if event.type != "StasisStart":
                # Events of channels no flow owns (e.g. after the flow finished) are noise.
                return
            self._start(cid, event)
            return
        session.deliver(event)

    def open_session(self, channel_id: str) -> CallSession:
        """A session for a channel we are about to originate, run by the caller's own task: the
        channel's events (state changes, ChannelDestroyed with the cause, StasisStart on answer)
        reach it from the first one on. ``close_session`` when done."""
        if channel_id in self._routes:
            raise ValueError(f"channel {channel_id} already has a session")
        session = CallSession(self, channel_id)
        self._routes[channel_id] = session
        self._sessions.add(session)
        return session

    def close_session(self, session: CallSession) -> None:
        for cid in session.channel_ids:
            if self._routes.get(cid) is session:
                del self._routes[cid]
        self._sessions.discard(session)

    def _start(self, channel_id: str, first_event: AriEvent) -> CallSession:
        session = CallSession(self, channel_id)
        self._routes[channel_id] = session
        self._sessions.add(session)
        session.task = asyncio.create_task(self._run(session, first_event), name=f"call-{channel_id}")
        return session

    async def _run(self, session: CallSession, first_event: AriEvent) -> None:
        bind_call_id(session.channel_id)
        try:
            await self.flow_factory(session, first_event)
        except asyncio.CancelledError:
            log.info("event=flow_cancelled")
            raise
        except Exception:
            log.exception("event=flow_crashed")
        finally:
            for cid in session.channel_ids:
                if self._routes.get(cid) is session:
                    del self._routes[cid]
            self._sessions.discard(session)

    def reconcile(self, live_channels: list[Channel]) -> tuple[int, int]:
        """After a reconnect: events were lost while the websocket was down.

        Channels a flow still owns but Asterisk no longer has get a synthetic IvrChannelGone;
        channels sitting in our Stasis app that no flow owns (the controller restarted) get a
        new flow started with IvrChannelRecovered. Returns (gone, recovered).
        """
        live = {c.id: c for c in live_channels}
        gone = 0
        for session in list(self._sessions):
            for cid in list(session.channel_ids):
                if cid not in live and cid not in session.ended_channels:
                    session.deliver(AriEvent.synthetic(CHANNEL_GONE, {"id": cid}))
                    gone += 1
        recovered = 0
        for channel in live_channels:
            if channel.id in self._routes or not channel.in_stasis_app(self.app):
                continue
            raw = {
                "id": channel.id, "name": channel.name, "state": channel.state,
                "caller": {"number": channel.caller_number, "name": channel.caller_name},
                "dialplan": {"exten": channel.exten, "context": channel.context,
                             "app_name": channel.app_name, "app_data": channel.app_data},
                "language": channel.language, "creationtime": channel.creationtime,
            }
            args = channel.app_data.split(",")[1:]
            self._start(channel.id, AriEvent.synthetic(CHANNEL_RECOVERED, raw, args=args))
            recovered += 1
        return gone, recovered

    async def shutdown(self, timeout: float = 5.0) -> None:
        tasks = [s.task for s in self._sessions if s.task]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
