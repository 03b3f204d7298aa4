"""The ivr command against the real Postgres: migrations, the call list, a dead database."""

import pytest
from click.testing import CliRunner

from ivr.cli import main

pytestmark = pytest.mark.db


def test_db_upgrade_is_idempotent_and_calls_list_reads_the_journal(database_url):
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(main, ["db", "upgrade", "--database-url", database_url])
        assert result.exit_code == 0, result.output
        assert "is at revision head" in result.output
    listed = runner.invoke(main, ["calls", "list", "--database-url", database_url, "--limit", "5"])
    assert listed.exit_code == 0, listed.output


def test_dead_database_is_a_clear_error_with_the_password_masked():
    runner = CliRunner()
    result = runner.invoke(main, ["db", "upgrade", "--database-url", "postgresql://ivr:s3cret@127.0.0.1:1/ivr"])
    assert result.exit_code == 1
    assert "database postgresql+psycopg://ivr:***@127.0.0.1:1/ivr unreachable" in result.output
    assert "s3cret" not in result.output and "Traceback" not in result.output
