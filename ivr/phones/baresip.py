"""baresip-driven test phone: speaks a WAV and presses keys in the same call.

Recipe (see docs/test-phones.md): a private config folder per phone with the
``aufile`` source (the WAV), the ``aubridge`` null player, ``g711`` only, and the
``cons`` module so the running phone can be driven by UDP lines (``/sndcode 1``,
``/hangup``, ``/quit``).  Call progress is read from baresip's stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .audio import convert_wav, validate_dtmf
from .sipp import PhoneError, _spawn, _terminate, free_udp_port, release_ports, tail

log = logging.getLogger(__name__)

BARESIP = "baresip"
MODULE_PATH = "/usr/lib/baresip/modules"

_ESTABLISHED = re.compile(r"call established", re.I)
_CLOSED = re.compile(r"(call: .*closed|session closed|call closed|terminated)", re.I)
_INCOMING = re.compile(r"(incoming call|answering call)", re.I)
_STATUS = re.compile(r"\b(\d{3})\s+[A-Za-z][A-Za-z ]*")


@dataclass
class BaresipResult:
    established: bool
    established_at: float | None
    closed: bool
    closed_at: float | None
    close_reason: str | None  # e.g. "Connection reset by peer", "486 Busy Here"
    incoming: int  # incoming calls seen (answer mode)
    dtmf_sent: str
    returncode: int | None
    stdout_log: Path
    output: str = field(repr=False, default="")


class BaresipPhone:
    """One baresip instance with its own config dir, SIP port, RTP ports and console port."""

    def __init__(self, workdir: Path | str | None = None, *, listen_port: int | None = None,
                 local_ip: str = "127.0.0.1", user: str = "caller", display_name: str | None = None):
        self.local_ip = local_ip
        self.user = user
        self.display_name = display_name
        self._own_port = listen_port is None
        self.port = listen_port or free_udp_port(local_ip)
        base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="baresip-"))
        self.workdir = base / f"baresip-{self.port}-{secrets.token_hex(3)}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc: asyncio.subprocess.Process | None = None
        self._ready = asyncio.Event()

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@{self.local_ip}:{self.port}"

    def write_config(self, *, wav: Path, cons_port: int, rtp_base: int, auto_answer: bool) -> Path:
        cfg = self.workdir / "config"
        source = f"aufile,{wav}"
        lines = [
            "poll_method\tepoll",
            f"sip_listen\t{self.local_ip}:{self.port}",
            f"net_interface\t{self.local_ip}",
            f"audio_source\t{source}",
            "audio_player\taubridge,nil",
            "audio_alert\taubridge,nil",
            "ausrc_srate\t8000",
            "auplay_srate\t8000",
            "ausrc_channels\t1",
            "auplay_channels\t1",
            f"rtp_ports\t{rtp_base}-{rtp_base + 3}",
            "rtcp_mux\tno",
            "jitter_buffer_delay\t5-10",
            f"module_path\t{MODULE_PATH}",
            "module\tg711.so",
            "module\taufile.so",
            "module\taubridge.so",
            "module\tcons.so",
            "module_app\taccount.so",
            "module_app\tmenu.so",
            f"cons_listen\t{self.local_ip}:{cons_port}",
            "",
        ]
        cfg.write_text("\n".join(lines))
        name = f'"{self.display_name}" ' if self.display_name else ""
        params = ";regint=0;audio_codecs=PCMU;dtmfmode=rtpevent"
        if auto_answer:
            params += ";answermode=auto"
        (self.workdir / "accounts").write_text(f"{name}<sip:{self.user}@{self.local_ip}:{self.port}>{params}\n")
        (self.workdir / "contacts").write_text("")
        return cfg

    async def _silence_wav(self, seconds: float) -> Path:
        path = self.workdir / "silence.wav"
        proc = await asyncio.create_subprocess_exec(
            "sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(path), "trim", "0", f"{seconds:.1f}",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await asyncio.wait_for(proc.wait(), 20)
        return path

    async def _run(self, *, wav: Path | None, duration: float, dial: str | None, auto_answer: bool,
                   dtmf: str, dtmf_at: float, dtmf_gap: float, hangup_after: float | None,
                   pad: float, until_closed: bool = True) -> BaresipResult:
        dtmf = validate_dtmf(dtmf)
        self._ready.clear()
        if wav is not None:
            wav = await convert_wav(Path(wav), self.workdir / "speech.wav", pad_front=pad)
        else:
            wav = await self._silence_wav(duration + 5)
        cons_port = free_udp_port(self.local_ip)
        rtp_base = free_udp_port(self.local_ip, span=4)
        self.write_config(wav=wav, cons_port=cons_port, rtp_base=rtp_base, auto_answer=auto_answer)
        out_log = self.workdir / "baresip.out"
        args = [BARESIP, "-f", str(self.workdir), "-t", str(int(duration + 2))]
        if dial:
            args += ["-e", f"/dial {dial}"]
        proc = self._proc = await _spawn(args, cwd=self.workdir, stdout_path=out_log)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        st = {"established": None, "closed": None, "reason": None, "incoming": 0, "sent": ""}

        def send(cmd: str) -> None:
            with contextlib.suppress(OSError):
                sock.sendto(cmd.encode() + b"\n", (self.local_ip, cons_port))

        pos = 0

        def scan() -> None:
            nonlocal pos
            try:
                data = out_log.read_text(errors="replace")
            except FileNotFoundError:
                return
            for line in data[pos:].splitlines():
                if "baresip is ready" in line:
                    self._ready.set()
                if _INCOMING.search(line):
                    st["incoming"] += 1
                if _ESTABLISHED.search(line) and st["established"] is None:
                    st["established"] = time.time()
                if _CLOSED.search(line) and st["established"] is not None and st["closed"] is None:
                    st["closed"] = time.time()
                    st["reason"] = line.strip()
                elif st["established"] is None and st["reason"] is None and ("closed" in line.lower()
                                                                           or "terminated" in line.lower()):
                    st["reason"] = line.strip()
            pos = data.rfind("\n") + 1 if "\n" in data else pos

        start = time.time()
        deadline = start + duration
        try:
            digits = list(dtmf)
            next_key_at: float | None = None
            while time.time() < deadline and proc.returncode is None:
                await asyncio.sleep(0.05)
                scan()
                now = time.time()
                est = st["established"]
                if est is not None and st["closed"] is None:
                    if digits:
                        if next_key_at is None:
                            next_key_at = est + dtmf_at
                        if now >= next_key_at:
                            d = digits.pop(0)
                            send(f"/sndcode {d}")
                            st["sent"] += d
                            next_key_at = now + dtmf_gap + 0.2
                    if hangup_after is not None and now >= est + hangup_after:
                        send("/hangup")
                        hangup_after = None
                if st["closed"] is not None and (not auto_answer or until_closed):
                    break
            send("/hangup")
            await asyncio.sleep(0.3)
            send("/quit")
            try:
                await asyncio.wait_for(proc.wait(), 3)
            except asyncio.TimeoutError:
                pass
        finally:
            sock.close()
            await _terminate(proc)
            self._proc = None
            release_ports((cons_port, 1), (rtp_base, 4))
        scan()
        output = out_log.read_text(errors="replace") if out_log.exists() else ""
        return BaresipResult(
            established=st["established"] is not None, established_at=st["established"],
            closed=st["closed"] is not None, closed_at=st["closed"], close_reason=st["reason"],
            incoming=st["incoming"], dtmf_sent=st["sent"], returncode=proc.returncode,
            stdout_log=out_log, output=output,
        )

    async def call(self, uri: str, *, wav: Path | None = None, dtmf: str = "", dtmf_at: float = 2.0,
                   dtmf_gap: float = 0.3, duration: float = 12, hangup_after: float | None = None,
                   pad: float = 1.5) -> BaresipResult:
        """Dial ``uri`` (e.g. ``sip:100@127.0.0.1:5060``), play ``wav`` (padded with ``pad`` s of
        silence), press ``dtmf`` keys starting ``dtmf_at`` s after the call is established;
        return after the call closes or ``duration`` s."""
        if not uri.startswith("sip:"):
            uri = "sip:" + uri
        if any(c in uri for c in " \r\n\t"):
            raise ValueError(f"bad uri {uri!r}")
        return await self._run(wav=wav, duration=duration, dial=uri, auto_answer=False, dtmf=dtmf,
                               dtmf_at=dtmf_at, dtmf_gap=dtmf_gap, hangup_after=hangup_after, pad=pad)

    async def answer(self, *, wav: Path | None = None, duration: float = 15, dtmf: str = "",
                     dtmf_at: float = 2.0, dtmf_gap: float = 0.3, hangup_after: float | None = None,
                     pad: float = 0.5, until_closed: bool = True) -> BaresipResult:
        """Auto-answer incoming calls on ``self.port`` for up to ``duration`` s (the first call gets
        the DTMF keys / hangup); with ``until_closed`` return as soon as that call is over.
        Start it as a task, give it ~1 s to come up, then place the call at ``self.uri``."""
        return await self._run(wav=wav, duration=duration, dial=None, auto_answer=True, dtmf=dtmf,
                               dtmf_at=dtmf_at, dtmf_gap=dtmf_gap, hangup_after=hangup_after, pad=pad,
                               until_closed=until_closed)

    async def wait_ready(self, timeout: float = 5.0) -> None:
        """Wait until the running baresip (started by call()/answer() in a task) accepts calls."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            raise PhoneError(f"baresip on port {self.port} not ready after {timeout}s",
                             log_tail=tail(self.workdir / "baresip.out")) from None

    async def close(self) -> None:
        if self._proc is not None:
            await _terminate(self._proc)
            self._proc = None
        if self._own_port:
            release_ports((self.port, 1))
