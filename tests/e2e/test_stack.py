"""The stack against a real Asterisk 22: an instance in the cached chroot on unusual ports."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import shutil
import socket
import subprocess
from pathlib import Path

import aiohttp
import pytest

from ivr.config import Settings
from ivr.stack.asterisk import AsteriskInstance, StackError

pytestmark = pytest.mark.e2e

PORTS = dict(sip_port=25060, http_port=28088, ami_port=25038, agi_port=24573, health_port=28090,
             carrier_port=25090, rtp_start=35000, rtp_end=35099)
PORTS2 = dict(sip_port=25061, http_port=28089, ami_port=25039, agi_port=24574, health_port=28091,
              carrier_port=25091, rtp_start=35100, rtp_end=35199)
SIPP_SCENARIO = Path("/work/shared/notes/sipp/uac_dtmf1.xml")


def _settings(state: Path, name: str, ports: dict) -> Settings:
    return Settings(ari_password=secrets.token_urlsafe(18), ami_secret=secrets.token_urlsafe(18),
                    asterisk_instance=name, state_dir=state, **ports)


def _port_listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def stack_settings(tmp_path_factory) -> Settings:
    return _settings(tmp_path_factory.mktemp("stack-state"), "pytest-stack", PORTS)


@pytest.fixture(scope="module")
def instance(stack_settings: Settings):
    inst = AsteriskInstance(stack_settings)
    inst.ensure_image()
    inst.stop()  # leftover of an interrupted run
    inst.install_config()
    inst.start()
    yield inst
    inst.stop()


def _ari_get(settings: Settings, path: str) -> dict:
    import urllib.request

    auth = base64.b64encode(f"{settings.ari_user}:{settings.ari_password}".encode()).decode()
    req = urllib.request.Request(f"{settings.ari_url}/ari{path}", headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def test_ari_answers_with_asterisk_22(instance, stack_settings):
    info = _ari_get(stack_settings, "/asterisk/info")
    assert info["system"]["version"].startswith("22.")
    assert instance.is_running()


def test_modules_loaded_without_errors(instance):
    out = instance.cli("module show like res_ari")
    assert "res_ari.so" in out and "Running" in out
    everything = instance.cli("module show")
    for mod in ("chan_pjsip.so", "res_pjsip_endpoint_identifier_ip.so", "app_stasis.so", "res_stasis_playback.so",
                "res_agi.so", "res_ari_channels.so", "res_ari_events.so", "codec_alaw.so", "format_gsm.so"):
        line = next((ln for ln in everything.splitlines() if ln.startswith(mod)), "")
        assert "Running" in line, mod
    log = instance.log_file.read_text(errors="replace")
    assert "ERROR[" not in log.split("starting instance")[-1], log[-2000:]


def test_dialplan_and_sip_config(instance):
    dp = instance.cli("dialplan show from-carrier")
    assert "Stasis(ivr,inbound,${EXTEN})" in dp
    assert "Dial(" not in dp
    assert "SendDTMF(1)" in instance.cli("dialplan show dtmf@ivr-selftest")
    ep = instance.cli("pjsip show endpoint carrier")
    assert "from-carrier" in ep and "127.0.0.1:25060" in ep


def test_second_start_is_a_noop(instance):
    pid = instance.pid()
    instance.start(timeout=10)
    assert instance.pid() == pid
    assert AsteriskInstance(instance.settings).pid() == pid  # found through the pid file


def test_wrong_ari_password_is_a_clear_error(instance, stack_settings):
    wrong = AsteriskInstance(stack_settings.with_overrides(ari_password=secrets.token_urlsafe(18)))
    with pytest.raises(StackError, match="wrong ARI credentials"):
        wrong.start(timeout=10)


@pytest.mark.skipif(not shutil.which("sipp") or not SIPP_SCENARIO.exists(), reason="sipp or scenario missing")
async def test_sip_invite_reaches_stasis(instance, stack_settings, tmp_path):
    s = stack_settings
    auth = {"Authorization": "Basic " + base64.b64encode(f"{s.ari_user}:{s.ari_password}".encode()).decode()}
    events: list[dict] = []
    async with aiohttp.ClientSession(headers=auth) as http:
        async with http.ws_connect(f"{s.ari_ws_url}?app={s.ari_app}") as ws:
            proc = await asyncio.create_subprocess_exec(
                "sipp", f"127.0.0.1:{s.sip_port}", "-sf", str(SIPP_SCENARIO), "-s", "74951234567", "-m", "1",
                "-i", "127.0.0.1", "-p", "25071", "-mi", "127.0.0.1", "-mp", "36000", "-nostdin", "-timeout", "20s",
                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                async with asyncio.timeout(20):
                    async for msg in ws:
                        ev = json.loads(msg.data)
                        events.append(ev)
                        if ev["type"] == "StasisStart":
                            await http.post(f"{s.ari_url}/ari/channels/{ev['channel']['id']}/answer")
                        if ev["type"] == "StasisEnd":
                            break
            finally:
                if proc.returncode is None:
                    try:
                        await asyncio.wait_for(proc.wait(), 25)
                    except asyncio.TimeoutError:
                        proc.kill()
                        await proc.wait()
    start = next(e for e in events if e["type"] == "StasisStart")
    assert start["args"] == ["inbound", "74951234567"]
    assert start["channel"]["name"].startswith("PJSIP/carrier-")
    assert start["channel"]["language"] == s.sound_language
    assert any(e["type"] == "ChannelDtmfReceived" and e["digit"] == "1" for e in events)


def test_two_instances_run_side_by_side(instance, tmp_path):
    other = AsteriskInstance(_settings(tmp_path, "pytest-stack2", PORTS2))
    other.stop()
    other.install_config()
    other.start()
    try:
        assert other.is_running() and instance.is_running()
        assert other.pid() != instance.pid()
        assert _ari_get(other.settings, "/asterisk/info")["system"]["version"].startswith("22.")
    finally:
        other.stop()
    assert not other.is_running() and instance.is_running()
    assert not _port_listening("127.0.0.1", PORTS2["http_port"])


def test_stop_frees_the_ports(instance, stack_settings):
    instance.stop()
    assert not instance.is_running()
    assert not _port_listening("127.0.0.1", stack_settings.http_port)
    assert not _port_listening("127.0.0.1", stack_settings.ami_port)
    instance.stop()  # idempotent
    with pytest.raises(StackError, match="not running"):
        instance.cli("core show version")
