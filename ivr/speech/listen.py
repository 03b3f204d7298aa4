"""The caller's audio, live, in the controller: ARI snoop + externalMedia -> RTP -> frames.

    caller channel ──snoop (spy=in)──▶ snoop channel ─┐
                                                      ├─ mixing bridge ──▶ externalMedia channel
                                                      │                    ──RTP slin16──▶ RtpSink (our UDP port)
    (playbacks go to the caller channel itself, which stays out of any bridge)

Why this path (docs/speech-dialog.md): the audio arrives as it is spoken (20 ms frames), so
end of speech is detected by our VAD within ~0.5 s and a word spoken over the prompt can stop
it (barge-in); an ARI recording would only hand us a file after Asterisk's own silence
detection. The snoop keeps the caller's channel free: the prompt plays on it as usual.

RTP from Asterisk carries signed linear audio in network byte order; frames are handed on as
little-endian 16-bit PCM at 16 kHz (``slin16``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from array import array
from dataclasses import dataclass

from ivr.ari import AriClient, AriConflict, AriError, AriNotFound, AriUnavailable, CallSession

log = logging.getLogger("ivr.speech.listen")

SAMPLE_RATE = 16000
FRAME_BYTES = SAMPLE_RATE * 2 // 50          # 20 ms
_QUEUE_FRAMES = 50 * 60                      # one minute of audio at most waits for the reader


def rtp_payload(packet: bytes) -> bytes | None:
    """The payload of an RTP packet (version 2; CSRCs, extension and padding skipped)."""
    if len(packet) < 12 or packet[0] >> 6 != 2:
        return None
    csrc = packet[0] & 0x0F
    offset = 12 + 4 * csrc
    if packet[0] & 0x10:  # header extension
        if len(packet) < offset + 4:
            return None
        offset += 4 + 4 * int.from_bytes(packet[offset + 2:offset + 4], "big")
    end = len(packet)
    if packet[0] & 0x20 and end > offset:  # padding
        end -= packet[-1]
    return packet[offset:end] if end > offset else None


def be16_to_le16(payload: bytes) -> bytes:
    if len(payload) % 2:
        payload = payload[:-1]
    samples = array("h", payload)
    if sys.byteorder == "little":
        samples.byteswap()
    return samples.tobytes()


class RtpSink(asyncio.DatagramProtocol):
    """One UDP port receiving one call's audio. Frames wait in a bounded queue; when the reader
    falls a minute behind, the oldest are dropped (and counted) rather than memory growing."""

    def __init__(self):
        self.frames: asyncio.Queue[bytes] = asyncio.Queue(maxsize=_QUEUE_FRAMES)
        self.packets = 0
        self.dropped = 0
        self.bad = 0
        self.source: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if self.source is None:
            self.source = addr
        elif addr != self.source:  # only the Asterisk that we asked for this stream
            self.bad += 1
            return
        payload = rtp_payload(data)
        if payload is None:
            self.bad += 1
            return
        self.packets += 1
        if self.frames.full():
            self.frames.get_nowait()
            self.dropped += 1
        self.frames.put_nowait(be16_to_le16(payload))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class ListenerIds:
    snoop: str
    media: str
    bridge: str


class CallAudio:
    """The caller's audio of one call (see the module doc). ``start`` wires it, ``frames`` reads
    it, ``close`` tears everything down (also when the caller already hung up)."""

    def __init__(self, ari: AriClient, session: CallSession, app: str, *, bind_host: str = "127.0.0.1",
                 advertise_host: str | None = None):
        self.ari = ari
        self.session = session
        self.app = app
        self.bind_host = bind_host
        self.advertise_host = advertise_host or bind_host  # the address Asterisk sends RTP to
        tag = uuid.uuid4().hex[:10]
        self.ids = ListenerIds(snoop=f"snoop-{tag}", media=f"media-{tag}", bridge=f"listen-{tag}")
        self.sink: RtpSink | None = None
        self._started = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        _, self.sink = await loop.create_datagram_endpoint(RtpSink, local_addr=(self.bind_host, 0))
        # Their events (StasisStart of the helper channels) belong to this call, not to new flows.
        self.session.watch(self.ids.snoop)
        self.session.watch(self.ids.media)
        try:
            await self.ari.create_bridge("mixing", bridge_id=self.ids.bridge, name=self.ids.bridge)
            await self.ari.external_media(app=self.app, channel_id=self.ids.media,
                                          external_host=f"{self.advertise_host}:{self.sink.port}", fmt="slin16",
                                          direction="both")
            await self.ari.snoop(self.session.channel_id, app=self.app, snoop_id=self.ids.snoop, spy="in",
                                 app_args="listen")
            # The helper channels enter our Stasis app asynchronously: addChannel can come a few
            # ms too early (422 "not in Stasis application"); try again briefly.
            for attempt in range(20):
                try:
                    await self.ari.add_to_bridge(self.ids.bridge, [self.ids.snoop, self.ids.media])
                    break
                except AriConflict:
                    if attempt == 19:
                        raise
                    await asyncio.sleep(0.05)
            self._started = True
        except (AriError, AriUnavailable):
            await self.close()
            raise
        log.info("event=listening port=%d snoop=%s media=%s", self.sink.port, self.ids.snoop, self.ids.media)

    async def next_frame(self, timeout: float) -> bytes | None:
        assert self.sink is not None
        try:
            async with asyncio.timeout(timeout):
                return await self.sink.frames.get()
        except TimeoutError:
            return None

    def drain(self) -> int:
        """Forget the audio heard so far (e.g. our own prompt's echo before a question)."""
        n = 0
        if self.sink is not None:
            while not self.sink.frames.empty():
                self.sink.frames.get_nowait()
                n += 1
        return n

    async def close(self) -> None:
        for cid in (self.ids.snoop, self.ids.media):
            try:
                await self.ari.hangup(cid)
            except (AriNotFound, AriError, AriUnavailable):
                pass
        try:
            await self.ari.destroy_bridge(self.ids.bridge)
        except (AriNotFound, AriError, AriUnavailable):
            pass
        if self.sink is not None:
            self.sink.close()
            log.info("event=listening_stopped packets=%d dropped=%d bad=%d", self.sink.packets, self.sink.dropped,
                     self.sink.bad)
