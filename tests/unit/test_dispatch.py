"""Per-call ordering, a reader that never waits for a flow, and reconnect reconciliation."""

import asyncio

from ivr.ari import AriEvent, CallDispatcher, Channel
from ivr.ari.events import CHANNEL_GONE, CHANNEL_RECOVERED


def ev(event_type, channel_id, **extra):
    return AriEvent(event_type, {"type": event_type, "channel": {"id": channel_id}, **extra})


def chan(channel_id, app_data="ivr,inbound,100", app_name="Stasis"):
    return Channel.from_json({"id": channel_id, "name": f"PJSIP/x-{channel_id}", "state": "Up",
                              "dialplan": {"app_name": app_name, "app_data": app_data}})


async def test_events_reach_each_call_in_order_and_a_slow_call_blocks_nobody():
    seen: dict[str, list[str]] = {}
    release_slow = asyncio.Event()

    async def flow(session, first):
        seen[session.channel_id] = [first.type]
        if session.channel_id == "slow":
            await release_slow.wait()  # a flow stuck on I/O
        while (event := await session.next_event(timeout=1)) is not None:
            seen[session.channel_id].append(event.type + event.digit)
            if event.type == "StasisEnd":
                return

    dispatcher = CallDispatcher("ivr", flow)
    dispatcher.dispatch(ev("StasisStart", "slow"))
    dispatcher.dispatch(ev("StasisStart", "fast"))
    for digit in "123":
        dispatcher.dispatch(ev("ChannelDtmfReceived", "slow", digit=digit))
        dispatcher.dispatch(ev("ChannelDtmfReceived", "fast", digit=digit))
    dispatcher.dispatch(ev("StasisEnd", "fast"))
    dispatcher.dispatch(ev("StasisEnd", "slow"))
    await asyncio.sleep(0.05)
    # The fast call finished while the slow one was still stuck.
    assert seen["fast"] == ["StasisStart", "ChannelDtmfReceived1", "ChannelDtmfReceived2",
                            "ChannelDtmfReceived3", "StasisEnd"]
    assert seen["slow"] == ["StasisStart"]
    release_slow.set()
    await asyncio.sleep(0.05)
    assert seen["slow"] == seen["fast"]
    assert dispatcher.active_calls == 0


async def test_playback_events_are_routed_by_target_channel():
    got = []

    async def flow(session, first):
        got.append((await session.next_event(timeout=1)).type)

    dispatcher = CallDispatcher("ivr", flow)
    dispatcher.dispatch(ev("StasisStart", "c1"))
    dispatcher.dispatch(AriEvent("PlaybackFinished", {"playback": {"id": "p", "target_uri": "channel:c1"}}))
    await asyncio.sleep(0.01)
    assert got == ["PlaybackFinished"]


async def test_events_of_unknown_channels_do_not_start_flows():
    started = []

    async def flow(session, first):
        started.append(first.type)

    dispatcher = CallDispatcher("ivr", flow)
    dispatcher.dispatch(ev("ChannelDtmfReceived", "nobody", digit="1"))
    dispatcher.dispatch(AriEvent("DeviceStateChanged", {"type": "DeviceStateChanged"}))
    await asyncio.sleep(0.01)
    assert started == [] and dispatcher.active_calls == 0


async def test_reconcile_closes_vanished_calls_and_adopts_orphans():
    log = []
    hold = asyncio.Event()

    async def flow(session, first):
        log.append((session.channel_id, first.type, first.args))
        while (event := await session.next_event(timeout=1)) is not None:
            log.append((session.channel_id, event.type))
            if event.type == CHANNEL_GONE:
                return
        await hold.wait()

    dispatcher = CallDispatcher("ivr", flow)
    dispatcher.dispatch(ev("StasisStart", "vanished", args=["inbound", "100"]))
    dispatcher.dispatch(ev("StasisStart", "alive", args=["inbound", "100"]))
    await asyncio.sleep(0.01)
    live = [chan("alive"), chan("orphan", "ivr,inbound,74951234567"), chan("foreign", "otherapp,x"),
            chan("dialplan-only", "", app_name="Playback")]
    gone, recovered = dispatcher.reconcile(live)
    await asyncio.sleep(0.01)
    assert (gone, recovered) == (1, 1)
    assert ("vanished", CHANNEL_GONE) in log
    assert ("orphan", CHANNEL_RECOVERED, ["inbound", "74951234567"]) in log
    assert not any(entry[0] in ("foreign", "dialplan-only") for entry in log)
    hold.set()
    await dispatcher.shutdown(timeout=2)


async def test_a_crashing_flow_is_logged_and_forgotten(caplog):
    async def flow(session, first):
        raise RuntimeError("boom")

    dispatcher = CallDispatcher("ivr", flow)
    dispatcher.dispatch(ev("StasisStart", "c1"))
    await asyncio.sleep(0.01)
    assert dispatcher.active_calls == 0
    assert "event=flow_crashed" in caplog.text
