"""Shared fixtures.

Unit tests (tests/unit) need nothing. Database tests (marker ``db``) get a fresh migrated
database on the real Postgres the stack uses. End-to-end tests (marker ``e2e``) get a real
Asterisk instance named ``pytest`` on its own ports (so a demo stack can keep running), the real
``ivr-controller`` console script as a subprocess, and real SIP phones (ivr.phones).
"""

from __future__ import annotations

import os
import secrets

import pytest

from ivr.config import Settings
from ivr.runner import ControllerProcess, fetch_health, settings_env  # noqa: F401  (fixtures' helpers)
from ivr.stack.postgres import create_database, drop_database  # noqa: F401  (tests import them)
from models.migrate import upgrade

# Parallel work trees (or helpers) on one machine set these so their runs do not collide:
# IVR_TEST_DB names the test database, IVR_TEST_PORT_OFFSET shifts every e2e port.
TEST_DB = os.environ.get("IVR_TEST_DB", "ivr_test")
PORT_OFFSET = int(os.environ.get("IVR_TEST_PORT_OFFSET", "0"))


def recreate_database(server_url: str, name: str) -> str:
    """A fresh, empty database ``name`` on the server of ``server_url``; returns its URL."""
    drop_database(server_url, name)
    return create_database(server_url, name)


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """The Postgres server the stack scripts found or started (DATABASE_URL, else local)."""
    from ivr.stack.postgres import ensure_database

    return ensure_database(Settings(database_url=os.environ.get("DATABASE_URL") or None))


@pytest.fixture(scope="session")
def database_url(pg_server_url: str) -> str:
    url = recreate_database(pg_server_url, TEST_DB)
    upgrade(url)
    return url


# --- end-to-end: Asterisk + controller ---------------------------------------------------------

E2E_PORTS = {name: port + PORT_OFFSET for name, port in dict(
    sip_port=15060, http_port=18088, ami_port=15038, agi_port=14573, health_port=18090,
    carrier_port=15090, rtp_start=31000, rtp_end=31999).items()}


@pytest.fixture(scope="session")
def e2e_settings(tmp_path_factory, database_url: str) -> Settings:
    state = tmp_path_factory.mktemp("state")
    return Settings(
        database_url=database_url,
        ari_password=secrets.token_urlsafe(18),
        ami_secret=secrets.token_urlsafe(18),
        asterisk_instance=f"pytest{PORT_OFFSET or ''}",
        state_dir=state,
        digit_timeout=3.0,
        **E2E_PORTS,
    )


@pytest.fixture(scope="session")
def asterisk(e2e_settings: Settings):
    from ivr.stack.asterisk import AsteriskInstance

    instance = AsteriskInstance(e2e_settings)
    instance.ensure_image()
    instance.stop()  # a leftover from an interrupted run
    instance.install_config()
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def controller(asterisk, e2e_settings: Settings, tmp_path_factory):
    proc = ControllerProcess(e2e_settings, tmp_path_factory.mktemp("controller") / "controller.log").start()
    proc.wait_healthy()
    yield proc
    proc.stop()


@pytest.fixture
def phone(e2e_settings: Settings, tmp_path):
    """A sipp phone that calls the e2e Asterisk; ``phone(caller_id=...)`` for another number."""
    from ivr.phones.sipp import SippCaller

    def make(caller_id: str = "79161234567", **kwargs):
        return SippCaller(e2e_settings.bind_host, e2e_settings.sip_port, caller_id=caller_id, workdir=tmp_path,
                          **kwargs)

    return make


def unique_mobile() -> str:
    """A valid Russian mobile number no other test uses (calls are looked up by it)."""
    return "7916" + str(secrets.randbelow(10**7)).zfill(7)
