"""Media helpers for the test phones: RTP packets in a pcap file for sipp.

sipp's ``play_pcap_audio`` replays the UDP payloads of a pcap file from the
call's media port to the remote RTP address taken from the SDP, keeping the
packet timing of the file.  We write that pcap ourselves so that one call can
carry a whole timeline in a single, consistent RTP stream (one SSRC, monotonic
sequence numbers and timestamps):

* u-law silence / speech frames (payload type 0, 20 ms, 160 bytes),
* RFC 2833/4733 telephone-event packets (payload type 101) for each digit,
  with a fresh RTP timestamp per digit so that repeated digits ("11") are not
  discarded by the receiver as retransmissions of the same event.

The digit files shipped with sip-tester (``dtmf_2833_<d>.pcap``) all reuse the
same SSRC and fixed timestamps, which is why they are not used directly.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

PCMU_PT = 0
DTMF_PT = 101
SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 160
ULAW_SILENCE = b"\xff" * FRAME_SAMPLES

#: RFC 4733 event codes.
DTMF_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}

# Addresses written into the pcap; sipp replaces ports/addresses on replay.
_SRC_IP = bytes([10, 0, 0, 1])
_DST_IP = bytes([10, 0, 0, 2])
_SRC_PORT = 49176
_DST_PORT = 10000


class AudioError(RuntimeError):
    pass


def validate_dtmf(digits: str) -> str:
    digits = digits.upper()
    bad = [d for d in digits if d not in DTMF_EVENTS]
    if bad:
        raise ValueError(f"unsupported DTMF digit(s) {''.join(bad)!r}; allowed: 0-9 * # A-D")
    return digits


@dataclass(frozen=True)
class RtpPacket:
    t: float  # seconds from the start of the file
    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    def to_bytes(self) -> bytes:
        return struct.pack(
            "!BBHII",
            0x80,
            (0x80 if self.marker else 0) | self.payload_type,
            self.seq & 0xFFFF,
            self.timestamp & 0xFFFFFFFF,
            self.ssrc,
        ) + self.payload


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _frame(payload: bytes) -> bytes:
    """Ethernet + IPv4 + UDP frame carrying ``payload`` (checksums valid)."""
    udp_len = 8 + len(payload)
    pseudo = _SRC_IP + _DST_IP + struct.pack("!BBH", 0, 17, udp_len)
    udp_hdr = struct.pack("!HHHH", _SRC_PORT, _DST_PORT, udp_len, 0)
    csum = _checksum(pseudo + udp_hdr + payload) or 0xFFFF
    udp_hdr = struct.pack("!HHHH", _SRC_PORT, _DST_PORT, udp_len, csum)
    ip_hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64, 17, 0, _SRC_IP, _DST_IP)
    ip_hdr = ip_hdr[:10] + struct.pack("!H", _checksum(ip_hdr)) + ip_hdr[12:]
    eth = b"\x00\x00\x00\x00\x00\x02" + b"\x00\x00\x00\x00\x00\x01" + b"\x08\x00"
    return eth + ip_hdr + udp_hdr + payload


def write_pcap(path: Path, packets: list[RtpPacket]) -> Path:
    """Write RTP packets as a classic (microsecond) Ethernet pcap file."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for p in packets:
        frame = _frame(p.to_bytes())
        usec_total = int(round(p.t * 1_000_000))
        out += struct.pack("<IIII", usec_total // 1_000_000, usec_total % 1_000_000, len(frame), len(frame))
        out += frame
    path = Path(path)
    path.write_bytes(bytes(out))
    return path


def read_pcap(path: Path) -> list[RtpPacket]:
    """Parse a pcap written by :func:`write_pcap` (or sip-tester's) back into RTP packets."""
    b = Path(path).read_bytes()
    magic, _, _, _, _, _, link = struct.unpack("<IHHiIII", b[:24])
    if magic != 0xA1B2C3D4 or link != 1:
        raise AudioError(f"{path}: not a little-endian microsecond Ethernet pcap")
    off, t0, pkts = 24, None, []
    while off < len(b):
        sec, usec, incl, _orig = struct.unpack("<IIII", b[off:off + 16])
        off += 16
        frame = b[off:off + incl]
        off += incl
        t = sec + usec / 1e6
        t0 = t if t0 is None else t0
        rtp = frame[42:]
        _v, mpt, seq, ts, ssrc = struct.unpack("!BBHII", rtp[:12])
        pkts.append(RtpPacket(round(t - t0, 6), mpt & 0x7F, seq, ts, ssrc, rtp[12:], bool(mpt & 0x80)))
    return pkts


class RtpTimeline:
    """Builds a single RTP stream: audio frames and DTMF events, 20 ms apart."""

    def __init__(self, *, ssrc: int | None = None, seq: int | None = None, timestamp: int | None = None):
        rnd = random.Random()
        self.ssrc = rnd.getrandbits(32) if ssrc is None else ssrc
        self.seq = rnd.randrange(1000, 30000) if seq is None else seq
        self.ts = rnd.randrange(1000, 1_000_000) if timestamp is None else timestamp
        self.t = 0.0
        self.packets: list[RtpPacket] = []
        self._first = True

    @property
    def duration(self) -> float:
        return self.t

    def _add(self, pt: int, ts: int, payload: bytes, marker: bool = False, dt: float = FRAME_MS / 1000) -> None:
        self.packets.append(RtpPacket(round(self.t, 6), pt, self.seq & 0xFFFF, ts, self.ssrc, payload, marker))
        self.seq += 1
        self.t += dt

    def audio(self, ulaw: bytes) -> None:
        for i in range(0, len(ulaw), FRAME_SAMPLES):
            chunk = ulaw[i:i + FRAME_SAMPLES].ljust(FRAME_SAMPLES, b"\xff")
            self._add(PCMU_PT, self.ts, chunk, marker=self._first)
            self._first = False
            self.ts += FRAME_SAMPLES

    def silence(self, seconds: float) -> None:
        frames = int(round(seconds * 1000 / FRAME_MS))
        self.audio(ULAW_SILENCE * frames)

    def digit(self, digit: str, *, length: float = 0.16, volume: int = 10) -> None:
        """One RFC 4733 event: marker start packet, updates every 20 ms, 3 end packets."""
        event = DTMF_EVENTS[validate_dtmf(digit)]
        start_ts = self.ts
        steps = max(2, int(round(length * 1000 / FRAME_MS)))
        for i in range(steps):
            dur = (i + 1) * FRAME_SAMPLES
            end = i == steps - 1
            payload = struct.pack("!BBH", event, (0x80 if end else 0) | (volume & 0x3F), dur)
            if end:
                # the end packet is sent three times (same seq), as RFC 4733 recommends
                for _ in range(2):
                    self.packets.append(RtpPacket(round(self.t, 6), DTMF_PT, self.seq & 0xFFFF, start_ts, self.ssrc, payload))
            self._add(DTMF_PT, start_ts, payload, marker=(i == 0))
        self.ts = start_ts + steps * FRAME_SAMPLES

    def digits(self, digits: str, *, gap: float, length: float = 0.16) -> None:
        for i, d in enumerate(validate_dtmf(digits)):
            if i:
                self.silence(gap)
            self.digit(d, length=length)

    def write(self, path: Path) -> Path:
        return write_pcap(path, self.packets)


async def _sox(args: list[str], source: Path, timeout: float) -> None:
    """Run sox with ``args`` (after the binary); kill it on timeout or cancel."""
    sox = shutil.which("sox")
    if not sox:
        raise AudioError("sox is not installed")
    proc = await asyncio.create_subprocess_exec(
        sox, *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        raise AudioError(f"sox failed on {source}: {err.decode(errors='replace').strip()}")


async def wav_to_ulaw(wav: Path, out_raw: Path, *, timeout: float = 20.0) -> bytes:
    """Convert any audio file sox understands to raw 8 kHz mono u-law bytes."""
    await _sox([str(wav), "-t", "raw", "-r", "8000", "-c", "1", "-e", "u-law", "-b", "8", str(out_raw)], wav, timeout)
    return Path(out_raw).read_bytes()


async def convert_wav(wav: Path, out_wav: Path, *, encoding: str = "signed-integer", bits: int = 16,
                      pad_front: float = 0.0, timeout: float = 20.0) -> Path:
    """sox ``wav`` -> 8 kHz mono WAV (16-bit PCM by default), optionally with leading silence."""
    args = [str(wav), "-r", "8000", "-c", "1", "-e", encoding, "-b", str(bits), str(out_wav)]
    if pad_front > 0:
        args += ["pad", f"{pad_front:.3f}", "0"]
    await _sox(args, wav, timeout)
    return Path(out_wav)
