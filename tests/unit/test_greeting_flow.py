"""GreetingCall's decisions, driven by scripted ARI events (the e2e tests use real calls)."""

import asyncio

import pytest

from ivr.ari import AriEvent, AriNotFound, CallDispatcher
from ivr.ari.events import CHANNEL_GONE
from ivr.calls.greeting import GreetingCall


class ScriptedAri:
    """Records the REST calls a flow makes; answers like Asterisk would."""

    def __init__(self, *, gone=False):
        self.calls: list[tuple] = []
        self.gone = gone

    async def answer(self, cid):
        self.calls.append(("answer", cid))
        if self.gone:
            raise AriNotFound("POST", "/answer", 404, "Channel not found")

    async def play(self, cid, media, *, lang=None, playback_id=None):
        self.calls.append(("play", media, lang, playback_id))

    async def stop_playback(self, pid):
        self.calls.append(("stop", pid))

    async def hangup(self, cid, reason="normal"):
        self.calls.append(("hangup", cid))


class Journal:
    def __init__(self):
        self.snapshots = []

    def record(self, record):
        self.snapshots.append((record.result, record.digits, record.answered_at is not None,
                               record.ended_at is not None, record.hangup_by, record.notes, record.from_e164))


def start_event(caller="+79161234567", name="Пётр"):
    return AriEvent("StasisStart", {
        "type": "StasisStart", "args": ["inbound", "74951234567"],
        "channel": {"id": "c1", "name": "PJSIP/carrier-1", "state": "Ring",
                    "caller": {"number": caller, "name": name}, "dialplan": {"exten": "74951234567"}},
    })


async def run_call(script, *, ari=None, digit_timeout=0.3):
    ari = ari or ScriptedAri()
    journal = Journal()
    flows = []

    async def factory(session, first):
        call = GreetingCall(ari, journal, session, greeting_sounds=("hello",), language="ru_RU_f_IvrvoiceRU",
                            digit_timeout=digit_timeout)
        flows.append(call)
        await call.run(first)

    dispatcher = CallDispatcher("ivr", factory)
    dispatcher.dispatch(start_event())
    await asyncio.sleep(0.01)
    for item in script:
        if isinstance(item, float):
            await asyncio.sleep(item)
            continue
        event_type, fields = item
        if event_type == "PlaybackFinished":
            pid = next(c[3] for c in reversed(ari.calls) if c[0] == "play")
            dispatcher.dispatch(AriEvent(event_type, {"playback": {"id": pid, "target_uri": "channel:c1"}}))
        else:
            dispatcher.dispatch(AriEvent(event_type, {"type": event_type, "channel": {"id": "c1"}, **fields}))
        await asyncio.sleep(0.01)
    await asyncio.wait_for(asyncio.gather(*(s.task for s in list(dispatcher._sessions))), 3)
    return ari, journal.snapshots[-1], journal.snapshots


async def test_digit_during_greeting_barges_in_and_is_recorded():
    ari, final, snapshots = await run_call([("ChannelDtmfReceived", {"digit": "1"}), ("PlaybackFinished", {})])
    assert final[:5] == ("digit", "1", True, True, "ivr")
    assert ari.calls[0] == ("answer", "c1")
    assert ari.calls[1][0:3] == ("play", ["sound:hello"], "ru_RU_f_IvrvoiceRU")
    assert ari.calls[2][0] == "stop"  # greeting stopped by the key
    assert ari.calls[-1] == ("hangup", "c1")
    assert snapshots[0][0] is None and final[6] == "+79161234567"  # a row at start, completed at end


async def test_nothing_pressed_times_out_after_the_greeting():
    ari, final, _ = await run_call([("PlaybackFinished", {}), 0.5])
    assert final[:2] == ("no_input", "")
    assert ("hangup", "c1") in ari.calls


async def test_star_and_hash_are_kept_but_not_accepted():
    _, final, _ = await run_call([("PlaybackFinished", {}), ("ChannelDtmfReceived", {"digit": "*"}),
                                  ("ChannelDtmfReceived", {"digit": "#"}), 0.5])
    assert final[:2] == ("invalid_input", "*#")


async def test_timeout_does_not_run_while_the_greeting_plays():
    # 0.5 s of greeting with a 0.3 s digit timeout: the key pressed after it still counts.
    _, final, _ = await run_call([0.5, ("ChannelDtmfReceived", {"digit": "7"}), ("PlaybackFinished", {})])
    assert final[:2] == ("digit", "7")


async def test_hangup_during_greeting_is_recorded_as_caller_hangup():
    ari, final, _ = await run_call([("ChannelHangupRequest", {"cause": 16}), ("StasisEnd", {})])
    assert final[0] == "caller_hangup" and final[4] == "caller"
    assert "during greeting" in final[5]
    assert ("hangup", "c1") not in ari.calls


async def test_hangup_noticed_only_after_reconnect():
    _, final, _ = await run_call([("PlaybackFinished", {}), (CHANNEL_GONE, {})], digit_timeout=5)
    assert final[0] == "caller_hangup"
    assert "after event stream reconnect" in final[5]


async def test_channel_gone_before_answer():
    ari, final, _ = await run_call([], ari=ScriptedAri(gone=True))
    assert final[0] == "caller_hangup" and final[2] is False


@pytest.mark.parametrize("caller", ["anonymous", "<sip:evil>", "8" * 200, ""])
async def test_hostile_caller_ids_are_stored_safely(caller):
    ari = ScriptedAri()
    journal = Journal()

    async def factory(session, first):
        await GreetingCall(ari, journal, session, greeting_sounds=("hello",), language="ru",
                           digit_timeout=0.05).run(first)

    dispatcher = CallDispatcher("ivr", factory)
    dispatcher.dispatch(start_event(caller=caller, name="x\r\ny"))
    await asyncio.sleep(0.01)
    dispatcher.dispatch(AriEvent("ChannelHangupRequest", {"channel": {"id": "c1"}}))
    await asyncio.wait_for(asyncio.gather(*(s.task for s in list(dispatcher._sessions))), 3)
    assert journal.snapshots[-1][6] is None  # never a fake E.164
