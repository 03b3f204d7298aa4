"""Faults around the controller: bad credentials, Asterisk away or restarting, a dead database,
and the AMI + FastAGI paths exercised through the real dialplan."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from ivr.ami import AmiAdapter, AmiAuthError
from ivr.config import PROJECT_ROOT
from ivr.runner import ControllerProcess, fetch_health, settings_env

pytestmark = pytest.mark.e2e


def run_controller(settings, timeout=20, **overrides) -> subprocess.CompletedProcess:
    env = settings_env(settings) | overrides
    return subprocess.run([sys.executable, "-m", "ivr.controller"], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_wrong_ari_password_is_a_clear_fatal_error(asterisk, e2e_settings):
    proc = run_controller(e2e_settings, IVR_ARI_PASSWORD="definitely-wrong-password")
    assert proc.returncode == 3
    assert "ARI refused user 'ivr'" in proc.stderr and "wrong user or password" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_wrong_ami_secret_is_a_clear_fatal_error(asterisk, e2e_settings):
    proc = run_controller(e2e_settings, IVR_AMI_SECRET="definitely-wrong-secret")
    assert proc.returncode == 3
    assert "AMI login refused" in proc.stderr and "wrong user or secret" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_secrets_are_a_configuration_error(e2e_settings):
    env = settings_env(e2e_settings)
    env.pop("IVR_ARI_PASSWORD")
    proc = subprocess.run([sys.executable, "-m", "ivr.controller"], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2
    assert "IVR_ARI_PASSWORD" in proc.stderr and "ivr stack init" in proc.stderr


def test_unreachable_asterisk_is_retried_with_backoff_without_stack_traces(e2e_settings, tmp_path):
    settings = e2e_settings.with_overrides(http_port=18999, ami_port=18998, agi_port=18997, health_port=18996)
    controller = ControllerProcess(settings, tmp_path / "controller.log").start()
    try:
        time.sleep(8)
        health = asyncio.run(fetch_health(settings))
        assert health["ok"] is False and health["ari"]["connected"] is False
    finally:
        assert controller.stop() == 0
    text = controller.log_text()
    attempts = [l for l in text.splitlines() if "event=ari_unreachable" in l]
    assert len(attempts) >= 3, text
    assert "url=ws://127.0.0.1:18999/ari/events" in text
    delays = [float(l.split("retry_in=")[1].rstrip("s")) for l in attempts if "retry_in=" in l]
    assert delays == sorted(delays) or max(delays) > min(delays), "back-off must grow"
    assert "Traceback" not in text


async def test_ami_and_fastagi_work_through_the_dialplan(controller, e2e_settings):
    ami = AmiAdapter(e2e_settings.bind_host, e2e_settings.ami_port, e2e_settings.ami_user, e2e_settings.ami_secret)
    await ami.connect()
    got: asyncio.Future = asyncio.get_running_loop().create_future()

    def on_user_event(manager, event):
        if event.get("UserEvent") == "IvrAgiSelftest" and not got.done():
            got.set_result(event.get("Result"))

    ami.on_event("UserEvent", on_user_event)
    assert await ami.ping()
    response = await ami.action({"Action": "Originate", "Channel": "Local/agi@ivr-selftest",
                                 "Application": "Wait", "Data": "1", "Async": "true"})
    # Async originate answers with the response followed by the OriginateResponse event.
    first = response[0] if isinstance(response, list) else response
    assert first.success, response
    assert await asyncio.wait_for(got, 15) == "ok"  # dialplan -> AGI -> controller -> variable -> dialplan
    health = await fetch_health(e2e_settings)
    assert health["agi"]["requests"] >= 1 and health["ami"]["ping"] is True
    ami.close()


async def test_ami_wrong_secret_raises_clearly(asterisk, e2e_settings):
    ami = AmiAdapter(e2e_settings.bind_host, e2e_settings.ami_port, e2e_settings.ami_user, "wrong-secret-123456")
    with pytest.raises(AmiAuthError, match="wrong user or secret"):
        await ami.connect()


async def test_garbage_on_the_agi_port_does_not_hurt_the_server(controller, e2e_settings):
    for payload in (b"", b"agi_network_script: selftest\n", b"\x00" * 5000, b"GET / HTTP/1.0\r\n\r\n"):
        reader, writer = await asyncio.open_connection(e2e_settings.bind_host, e2e_settings.agi_port)
        writer.write(payload)
        await writer.drain()
        writer.close()
    await asyncio.sleep(0.5)
    assert (await fetch_health(e2e_settings))["agi"]["listening"] is True
