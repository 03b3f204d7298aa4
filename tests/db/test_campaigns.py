"""Campaign pages against the real Postgres: counts per template and day from jobs inserted
directly, the server-drawn SVG chart, a job's attempt history with transcript and audio player,
and the audio handler serving only files inside the utterances folder (aiohttp test server; a
bare app with a stand-in for the console core's login middleware)."""

from __future__ import annotations

import os
import secrets
import wave
from datetime import date, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text

from ivr.web.campaigns import (
    CAMPAIGN_TZ, campaign_chart, campaign_counts, day_range, safe_audio_file, setup_campaigns, stacked_bars_svg,
)
from models.db import make_async_engine

pytestmark = pytest.mark.db

UTC = timezone.utc
DAY = date(2026, 2, 7)
PROMPT = "Пётр Николаевич, здравствуйте. Компания «Эни». Нажмите 1."


def msk(hour: int, minute: int = 0, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=CAMPAIGN_TZ)


@pytest.fixture
async def engine(database_url):
    eng = make_async_engine(database_url)
    yield eng
    await eng.dispose()


async def _job(conn, client: int, template: str, status: str, created: datetime, *, result: str | None = None,
               updated: datetime | None = None) -> int:
    return (await conn.execute(text(
        "INSERT INTO notification_jobs (client_id, e164, template, status, result, created_at, earliest_at, "
        "updated_at, prompt_text) VALUES (:c, '+79161234567', :t, :s, :r, :cr, :cr, :u, :p) RETURNING id"),
        {"c": client, "t": template, "s": status, "r": result, "cr": created, "u": updated or created,
         "p": PROMPT})).scalar()


async def _attempt(conn, job: int, no: int, channel: str, state: str, started: datetime, **kw) -> int:
    cols = {"job_id": job, "attempt_no": no, "channel": channel, "state": state, "started_at": started,
            "prompt_text": PROMPT, **kw}
    names = ", ".join(cols)
    return (await conn.execute(text(f"INSERT INTO notification_attempts ({names}) VALUES "
                                    f"({', '.join(':' + k for k in cols)}) RETURNING id"), cols)).scalar()


@pytest.fixture
async def campaign(engine):
    """A template with one job in each state on DAY, one the day before, another template."""
    tpl = "docs_" + secrets.token_hex(4)
    other = "other_" + secrets.token_hex(4)
    ids: dict[str, int] = {}
    async with engine.begin() as conn:
        client = (await conn.execute(text("INSERT INTO clients (full_name) VALUES ('Пётр Сидоров') RETURNING id")
                                     )).scalar()
        created = msk(10)
        for status in ("pending", "pending", "scheduled", "dialing"):
            await _job(conn, client, tpl, status, created)
        sent = await _job(conn, client, tpl, "sent", created)
        await _attempt(conn, sent, 1, "sms", "sent", msk(10, 5), sms_message_id="m1")
        for status, hour in (("confirmed", 11), ("confirmed", 11), ("not_received", 12), ("exhausted", 15),
                             ("callback", 12), ("handed_over", 13)):
            ids[status] = await _job(conn, client, tpl, status, created, result=status, updated=msk(hour, 30))
        delivered = await _job(conn, client, tpl, "delivered", created, result="delivered", updated=msk(14))
        await _attempt(conn, delivered, 1, "sms", "done", msk(13), sms_message_id="m2", delivered_at=msk(14))
        await _job(conn, client, tpl, "confirmed", msk(10, day=DAY - timedelta(days=1)), result="confirmed",
                   updated=msk(11, day=DAY - timedelta(days=1)))
        await _job(conn, client, other, "confirmed", created, result="confirmed", updated=msk(11))
        # the handed-over job's spoken answer
        job = ids["handed_over"]
        att = await _attempt(conn, job, 1, "call", "done", msk(13), answered_at=msk(13), ended_at=msk(13, 1),
                             cause="handed_over")
        ids["attempt"] = att
    return tpl, other, ids, client


async def test_counts_per_template_and_day(engine, campaign):
    tpl, other, _ids, _c = campaign
    async with engine.connect() as conn:
        rows = await campaign_counts(conn, day_range(None, 3, DAY), tpl)
        one_day = await campaign_counts(conn, day_range(DAY, 1, DAY), None)
    assert [(r["template"], r["day"]) for r in rows] == [(tpl, DAY), (tpl, DAY - timedelta(days=1))]
    r = rows[0]
    assert r["total"] == 12
    assert (r["pending"], r["in_progress"], r["confirmed"], r["not_received"], r["exhausted"], r["callback"],
            r["handed_over"], r["other"]) == (3, 2, 2, 1, 1, 1, 1, 1)
    assert (r["sms_sent"], r["sms_delivered"]) == (2, 1)
    assert rows[1]["total"] == 1 and rows[1]["confirmed"] == 1
    assert {x["template"] for x in one_day} >= {tpl, other}
    assert all(x["day"] == DAY for x in one_day)


async def test_chart_by_hour_and_svg(engine, campaign):
    tpl, *_ = campaign
    async with engine.connect() as conn:
        chart = await campaign_chart(conn, day_range(DAY, 1, DAY), tpl)
    assert len(chart) == 24
    at = {b.hour: v for b, v in chart.items() if v}
    assert at == {11: {"confirmed": 2}, 12: {"not_received": 1, "callback": 1}, 13: {"handed_over": 1},
                  14: {"delivered": 1}, 15: {"exhausted": 1}}
    svg = stacked_bars_svg(chart, "hour")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count('data-series="confirmed"') == 1 and "подтвердили: 2" in svg
    empty = stacked_bars_svg({b: {} for b in day_range(None, 7, DAY).buckets}, "day")
    assert "<rect" in empty and "data-series" not in empty


# --- web ---------------------------------------------------------------------------------------
def _app(engine, audio_dir, role: str = "admin") -> web.Application:
    @web.middleware
    async def fake_login(request, handler):      # the console core's middleware sets request["user"]
        request["user"] = SimpleNamespace(role=role, department_id=None, login="a", display_name="A")
        return await handler(request)

    app = web.Application(middlewares=[fake_login])
    app["engine"] = engine
    setup_campaigns(app, audio_dir=audio_dir)
    return app


def _wav(path) -> bytes:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * 800)
    return path.read_bytes()


async def test_pages_job_history_and_audio(engine, campaign, tmp_path):
    tpl, _other, ids, _c = campaign
    folder = tmp_path / "utterances"
    folder.mkdir()
    inside = _wav(folder / "robot-1-1.wav")
    (tmp_path / "secret.wav").write_bytes(b"RIFF secret")
    os.symlink(tmp_path / "secret.wav", folder / "link.wav")
    paths = {"ok": str(folder / "robot-1-1.wav"), "relative_ok": "robot-1-1.wav", "passwd": "/etc/passwd",
             "dotdot": str(folder / ".." / "secret.wav"), "rel_dotdot": "../secret.wav",
             "symlink": str(folder / "link.wav"), "missing": str(folder / "gone.wav")}
    uid = {}
    async with engine.begin() as conn:
        for seq, (key, path) in enumerate(paths.items(), start=1):
            uid[key] = (await conn.execute(text(
                "INSERT INTO utterances (attempt_id, seq, step, at, duration_s, audio_path, transcript, intent) "
                "VALUES (:a, :s, 'ask', :at, 1.5, :p, :t, 'unclear') RETURNING id"),
                {"a": ids["attempt"], "s": seq, "at": msk(13), "p": path,
                 "t": "позовите менеджера <script>" if key == "ok" else "ну"})).scalar()
    async with TestClient(TestServer(_app(engine, folder))) as client:
        page = await client.get(f"/campaigns?template={tpl}&day={DAY.isoformat()}")
        body = await page.text()
        assert page.status == 200
        assert "<svg" in body and 'data-series="confirmed"' in body
        assert f'data-template="{tpl}"' in body and '<td data-k="confirmed">2</td>' in body
        assert (await client.get("/campaigns?day=07.02.2026")).status == 400
        assert (await client.get("/campaigns")).status == 200

        job = await client.get(f"/campaigns/job/{ids['handed_over']}")
        jbody = await job.text()
        assert job.status == 200
        assert "Компания «Эни»" in jbody and "handed_over" in jbody
        assert "позовите менеджера &lt;script&gt;" in jbody
        assert f'<audio controls preload="none" src="/campaigns/utterance/{uid["ok"]}/audio">' in jbody
        assert (await client.get("/campaigns/job/999999999")).status == 404

        ok = await client.get(f"/campaigns/utterance/{uid['ok']}/audio")
        assert ok.status == 200 and await ok.read() == inside and ok.headers["Content-Type"] == "audio/wav"
        assert (await client.get(f"/campaigns/utterance/{uid['relative_ok']}/audio")).status == 200
        for key in ("passwd", "dotdot", "rel_dotdot", "symlink", "missing"):
            resp = await client.get(f"/campaigns/utterance/{uid[key]}/audio")
            assert resp.status == 404, key
        assert (await client.get("/campaigns/utterance/999999999/audio")).status == 404
        assert (await client.get("/campaigns/utterance/..%2F..%2Fetc%2Fpasswd/audio")).status == 404


def test_safe_audio_file(tmp_path):
    base = tmp_path / "u"
    base.mkdir()
    (base / "a.wav").write_bytes(b"x")
    assert safe_audio_file(base, str(base / "a.wav")) == (base / "a.wav").resolve()
    for bad in (None, "", "/etc/passwd", "../u/../../etc/passwd", str(base), "a.wav\x00.txt"):
        assert safe_audio_file(base, bad) is None


async def test_manager_may_not_see_campaigns(engine, tmp_path):
    async with TestClient(TestServer(_app(engine, tmp_path, role="manager"))) as client:
        assert (await client.get("/campaigns")).status == 403
        assert (await client.get("/campaigns/job/1")).status == 403
        assert (await client.get("/campaigns/utterance/1/audio")).status == 403
