"""Toll fraud and access against the real Asterisk: nobody but the controller's originate path
reaches the carrier trunk. A sipp answering phone listens where the trunk sends calls
(IVR_CARRIER_PORT) and must never see an INVITE."""

from __future__ import annotations

import asyncio

import pytest

from ivr.phones.sipp import SippAnswerer, SippCaller
from models.db import run_sql

pytestmark = pytest.mark.e2e

EXTERNAL = ("89161234567", "0079161234567", "+79161234567", "810441234567890", "9007")
OPERATOR = "621"


@pytest.fixture(scope="module")
def with_operator(asterisk, e2e_settings, database_url):
    from ivr.stack.operators import load_operator_endpoints, sync_operators

    run_sql(database_url, "INSERT INTO operators (name, extension) VALUES ('Тест Фрод', :e) "
            "ON CONFLICT (extension) DO NOTHING", e=OPERATOR)
    sync_operators(e2e_settings, database_url)
    secret = next(op.secret for op in load_operator_endpoints(database_url) if op.extension == OPERATOR)
    yield secret
    run_sql(database_url, "DELETE FROM operators WHERE extension = :e", e=OPERATOR)
    sync_operators(e2e_settings, database_url)


@pytest.fixture
async def trunk(e2e_settings, tmp_path):
    async with SippAnswerer(listen_port=e2e_settings.carrier_port, mode="answer", hold=1,
                            workdir=tmp_path) as far_end:
        yield far_end


async def _call(settings, tmp_path, number: str, **kwargs):
    caller = SippCaller(settings.bind_host, settings.sip_port, workdir=tmp_path, **kwargs)
    return await caller.call(number, hold_after=1, timeout=6, raise_on_error=False)


async def test_a_carrier_caller_dialling_external_numbers_never_reaches_the_trunk(
        with_operator, controller, e2e_settings, tmp_path, trunk):
    # From 127.0.0.1 = IVR_CARRIER_MATCH: identified as the carrier, lands in [from-carrier].
    results = await asyncio.gather(*(_call(e2e_settings, tmp_path, n) for n in EXTERNAL))
    await asyncio.sleep(2)
    assert trunk.invites == 0, [r.status for r in results]
    assert all(r.status is not None for r in results)


async def test_the_trunk_watcher_sees_a_real_originate(with_operator, e2e_settings, trunk, asterisk):
    """Control: the controller's path (an originate to PJSIP/<number>@carrier) does reach it."""
    asterisk.cli("channel originate PJSIP/89161234567@carrier application Wait 1")
    await trunk.wait_for_calls(1, timeout=5)
    assert trunk.invites == 1


@pytest.mark.parametrize("caller_id,number", [
    ("79161234567", "89161234567"),      # an unknown peer dialling out
    ("anonymous", "89161234567"),        # anonymous
    ("carrier", "89161234567"),          # pretends to be the carrier by its From user
    (OPERATOR, "89161234567"),           # an operator's extension without its password
    ("79161234567", "74951234567"),      # an unknown peer calling the public number
])
async def test_unknown_and_anonymous_peers_are_rejected(with_operator, e2e_settings, tmp_path, trunk,
                                                        caller_id, number):
    # 127.0.0.2 is on the loopback interface but outside IVR_CARRIER_MATCH (127.0.0.1).
    result = await _call(e2e_settings, tmp_path, number, local_ip="127.0.0.2", caller_id=caller_id)
    assert not result.answered
    assert result.status in (401, 403, 407), result.status
    assert trunk.invites == 0


async def test_an_authenticated_operator_cannot_dial_out_through_the_trunk(with_operator, e2e_settings, tmp_path,
                                                                           trunk, asterisk):
    for number in EXTERNAL:
        result = await _call(e2e_settings, tmp_path, number, caller_id=OPERATOR, auth=(OPERATOR, with_operator))
        assert result.status not in (None, 401, 403, 407), f"the operator authenticated: {result.status}"
        assert not result.answered and result.status == 404, (number, result.status)
    # And a Local channel into [operators] (what a transfer would do) finds no route either.
    asterisk.cli("channel originate Local/89161234567@operators application Wait 1")
    await asyncio.sleep(2)
    assert trunk.invites == 0


def test_management_interfaces_listen_on_loopback_only(asterisk, e2e_settings):
    import subprocess

    out = subprocess.run(["ss", "-lntup"], capture_output=True, text=True).stdout
    for port in (e2e_settings.http_port, e2e_settings.ami_port, e2e_settings.sip_port):
        lines = [l for l in out.splitlines() if f":{port} " in l]
        assert lines, f"nothing listens on {port}"
        assert all("127.0.0.1:" in l for l in lines), lines
