"""routing.store and ``ivr routing`` against the real Postgres: apply, history, rollback, the
controller's async reads, departments upserted from the file."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, select

from models.db import make_async_engine, make_engine
from models.tables import Department, RulesetVersion
from routing import loader, store
from routing.cli import routing_group
from routing.facts import CallerFacts

pytestmark = pytest.mark.db

NOON = datetime(2026, 11, 24, 12, 0, tzinfo=ZoneInfo("Europe/Moscow"))


@pytest.fixture
def clean(database_url):
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(delete(RulesetVersion))
    yield engine
    engine.dispose()


def departments(engine) -> dict[str, tuple]:
    with engine.connect() as conn:
        rows = conn.execute(select(Department.code, Department.name, Department.strategy, Department.ring_timeout,
                                   Department.wrapup_seconds, Department.timezone)).all()
    return {row[0]: tuple(row[1:]) for row in rows}


async def test_apply_history_rollback_and_the_controller_reads(database_url, clean):
    ruleset, source = loader.load()
    first = store.apply_ruleset(database_url, ruleset, source, "admin")
    assert departments(clean)["current_sales"] == ("Отдел текущих продаж", "longest_idle", 15, 10, "Europe/Moscow")
    assert departments(clean)["documents"] == ("Документооборот (делопроизводитель)", "least_talk_time", 20, 30,
                                               "Europe/Moscow")

    edited_source = source.replace("first_deal_threshold: 1", "first_deal_threshold: 2") \
        .replace('name: "Отдел текущих продаж"\n    strategy: longest_idle',
                 'name: "Отдел текущих продаж"\n    strategy: fewest_calls')
    edited = loader.parse(edited_source)
    second = store.apply_ruleset(clean, edited, edited_source, "boss")
    assert second > first
    assert departments(clean)["current_sales"][1] == "fewest_calls"

    versions = store.list_versions(database_url)
    assert [(v.id, v.active, v.applied_by, v.rules, v.departments) for v in versions] == [
        (second, True, "boss", 7, 7), (first, False, "admin", 7, 7)]
    assert versions[0].sha256 == store.sha256_of(edited_source)
    assert store.active_source(database_url) == (second, edited_source)

    engine = make_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert await store.active_version(conn) == second
            version, loaded = await store.load_active_ruleset(conn)
        assert version == second and loaded == edited
        assert loaded.settings.first_deal_threshold == 2
        one_deal = CallerFacts(e164="+79161234567", client_id=1, deals_count=1, assigned_operator="301",
                               topic="purchase")
        assert loaded.decide(one_deal, NOON).rule == "known_by_segment"

        back = store.rollback(database_url, first)
        assert back == ruleset
        async with engine.connect() as conn:
            assert await store.active_version(conn) == first
            version, loaded = await store.load_active_ruleset(conn)
        assert version == first and loaded.decide(one_deal, NOON).rule == "client_with_deals"
        assert departments(clean)["current_sales"][1] == "longest_idle"
        assert [v.active for v in store.list_versions(database_url)] == [False, True]
    finally:
        await engine.dispose()

    with pytest.raises(KeyError):
        store.rollback(database_url, 999_999)


async def test_nothing_applied_yet(database_url, clean):
    engine = make_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert await store.active_version(conn) is None
            assert await store.load_active_ruleset(conn) is None
    finally:
        await engine.dispose()
    assert store.list_versions(database_url) == []
    assert store.active_source(database_url) is None


def test_cli_apply_diff_show_history_rollback(database_url, clean, tmp_path):
    runner = CliRunner()
    url = ["--database-url", database_url]
    applied = runner.invoke(routing_group, ["apply", *url, "--by", "ivanov"])
    assert applied.exit_code == 0, applied.output
    assert "+++ " in applied.output and "--- nothing applied" in applied.output
    first = int(applied.output.strip().splitlines()[-1].split()[2].rstrip(":"))
    assert applied.output.strip().splitlines()[-1] == f"applied version {first}: 7 rules, 7 departments (by ivanov)"

    again = runner.invoke(routing_group, ["apply", *url])
    assert again.exit_code == 0 and again.output.strip() == \
        f"no change: version {first} already has this file (7 rules, 7 departments)"

    changed = tmp_path / "rules.yaml"
    changed.write_text(loader.DEFAULT_FILE.read_text().replace("reaction_standard_seconds: 20",
                                                               "reaction_standard_seconds: 25"))
    dry = runner.invoke(routing_group, ["apply", str(changed), *url, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "-  reaction_standard_seconds: 20\n+  reaction_standard_seconds: 25" in dry.output
    assert store.active_source(database_url)[0] == first

    second_run = runner.invoke(routing_group, ["apply", str(changed), *url, "--by", "petrov"])
    assert second_run.exit_code == 0, second_run.output
    assert f"--- version {first}" in second_run.output

    shown = runner.invoke(routing_group, ["show", *url])
    assert shown.exit_code == 0 and "reaction_standard_seconds: 25" in shown.output

    history = runner.invoke(routing_group, ["history", *url]).output.splitlines()
    assert len(history) == 2
    assert history[0].startswith("* ") and "by petrov" in history[0]
    assert history[1].startswith(f"  {first:>4}") and "by ivanov" in history[1]

    rolled = runner.invoke(routing_group, ["rollback", *url, str(first)])
    assert rolled.exit_code == 0 and rolled.output.strip() == f"version {first} is active again: 7 rules, 7 departments"
    assert "reaction_standard_seconds: 20" in runner.invoke(routing_group, ["show", *url]).output
    missing = runner.invoke(routing_group, ["rollback", *url, "999999"])
    assert missing.exit_code == 1 and "no version 999999" in missing.output


def test_cli_apply_refuses_an_invalid_file_before_touching_the_database(database_url, clean, tmp_path):
    bad = tmp_path / "rules.yaml"
    text = loader.DEFAULT_FILE.read_text()
    line = text.splitlines().index("    strategy: fewest_calls") + 1
    bad.write_text(text.replace("strategy: fewest_calls", "strategy: random"))
    result = CliRunner().invoke(routing_group, ["apply", str(bad), "--database-url", database_url])
    assert result.exit_code == 1
    assert f"rules.yaml:{line}: departments.active_sales.strategy: unknown strategy 'random'" in result.output
    assert store.list_versions(database_url) == []


def test_cli_dead_database_is_a_clear_error():
    result = CliRunner().invoke(routing_group, ["history", "--database-url", "postgresql://ivr:s3cret@127.0.0.1:1/ivr"])
    assert result.exit_code == 1
    assert "unreachable" in result.output and "s3cret" not in result.output and "Traceback" not in result.output


def test_routing_is_mounted_on_the_ivr_command():
    from ivr.cli import main

    assert main.commands["routing"] is routing_group
