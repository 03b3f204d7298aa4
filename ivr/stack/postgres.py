"""Find or provide the PostgreSQL database the product uses.

Order: ``settings.database_url`` (verified) > a server answering on 127.0.0.1:5432 (database
``ivr`` created if missing) > a private cluster in ``<project>/.cache/pgdata`` (PostgreSQL
installed with apt-get if there is no ``initdb``). The existing cluster's config is never touched.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from ivr.config import PROJECT_ROOT, Settings
from models.db import mask_url, normalize_url

LOCAL_HOST = "127.0.0.1"
LOCAL_PORT = 5432
DEFAULT_DB = "ivr"
PGDATA = PROJECT_ROOT / ".cache" / "pgdata"


class DatabaseError(RuntimeError):
    """The database could not be reached or provided; the message says what to do."""


def _conninfo(url: str, dbname: str | None = None) -> str:
    u = make_url(normalize_url(url))
    return psycopg.conninfo.make_conninfo(
        host=u.host or LOCAL_HOST, port=u.port or LOCAL_PORT, user=u.username or "postgres",
        password=u.password or None, dbname=dbname or u.database or "postgres", connect_timeout=5,
    )


def _where(url: str) -> str:
    u = make_url(normalize_url(url))
    return f"{u.host or LOCAL_HOST}:{u.port or LOCAL_PORT}"


def check_url(url: str) -> None:
    """Connect and run SELECT 1, or raise DatabaseError naming host:port (password masked)."""
    try:
        with psycopg.connect(_conninfo(url)) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise DatabaseError(f"database at {_where(url)} does not answer ({mask_url(normalize_url(url))}): "
                            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def create_database(url: str, name: str) -> str:
    """CREATE DATABASE ``name`` on the server of ``url`` if missing; return its URL."""
    with psycopg.connect(_conninfo(url, "postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(normalize_url(url)).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str, name: str) -> None:
    """DROP DATABASE ``name`` (sessions terminated first) if it exists."""
    with psycopg.connect(_conninfo(url, "postgres"), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def ensure_database(settings: Settings) -> str:
    """Return a working SQLAlchemy URL (``postgresql+psycopg://...``); provide the database if needed."""
    if settings.database_url:
        url = normalize_url(settings.database_url)
        check_url(url)
        return url
    local = f"postgresql+psycopg://postgres@{LOCAL_HOST}:{LOCAL_PORT}/{DEFAULT_DB}"
    if not _port_open(LOCAL_HOST, LOCAL_PORT):
        _start_private_cluster(settings)
    try:
        return create_database(local, DEFAULT_DB)
    except psycopg.OperationalError as exc:
        raise DatabaseError(
            f"PostgreSQL at {LOCAL_HOST}:{LOCAL_PORT} refused user postgres without a password "
            f"({str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}); set DATABASE_URL="
            f"postgresql://USER:PASSWORD@HOST:PORT/ivr (in the environment or var/ivr.env)") from None


def _pg_bindir() -> Path | None:
    found = shutil.which("initdb")
    if found and Path(found).resolve().parent.joinpath("pg_ctl").exists():
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


def _run(cmd: list[str], what: str) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise DatabaseError(f"{what} failed (rc={res.returncode}): {' '.join(cmd)}\n{(res.stdout + res.stderr)[-2000:]}")


def _start_private_cluster(settings: Settings, pgdata: Path = PGDATA, port: int = LOCAL_PORT) -> None:
    bindir = _pg_bindir()
    if bindir is None:
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=apt_env)
        res = subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], capture_output=True, text=True,
                             env=apt_env)
        if res.returncode != 0:
            raise DatabaseError("installing PostgreSQL with apt-get failed:\n" + (res.stdout + res.stderr)[-2000:])
        if _port_open(LOCAL_HOST, port):
            return  # Debian's package created and started its own cluster: use that one
        bindir = _pg_bindir()
        if bindir is None:
            raise DatabaseError("PostgreSQL installed but no initdb found in /usr/lib/postgresql/*/bin")
    if not shutil.which("runuser"):
        raise DatabaseError("runuser (util-linux) is needed to run PostgreSQL as user postgres")
    try:
        import pwd
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise DatabaseError("no system user 'postgres'; install PostgreSQL (apt-get install postgresql-15)") from None
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    if pgdata.exists() and not (pgdata / "PG_VERSION").exists() and any(pgdata.iterdir()):
        raise DatabaseError(f"{pgdata} exists but is not a PostgreSQL cluster; move it away")
    if subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(pgdata.parent)]).returncode != 0:
        # The checkout sits where user postgres may not enter (e.g. under /root): keep the
        # cluster in a system folder instead of loosening the checkout's permissions.
        pgdata = Path("/var/lib/ivr-pgdata")
    if not (pgdata / "PG_VERSION").exists():
        pgdata.mkdir(mode=0o700, exist_ok=True)
        os.chown(pgdata, pw.pw_uid, pw.pw_gid)
        _run(["runuser", "-u", "postgres", "--", str(bindir / "initdb"), "-D", str(pgdata), "-U", "postgres",
              "--auth=trust", "--encoding=UTF8", "--locale=C"], "initdb")
        (pgdata / "pg_hba.conf").write_text(
            "# Private cluster of the IVR stack: trust on loopback only.\n"
            "local all all trust\n"
            f"host all all {LOCAL_HOST}/32 trust\n", encoding="utf-8")
    if (pgdata / "postmaster.pid").exists() and _port_open(LOCAL_HOST, port):
        return
    log = Path(settings.state_dir) / "postgres.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if not log.exists():
        log.touch()
    os.chown(log, pw.pw_uid, pw.pw_gid)
    rundir = pgdata / "run"
    rundir.mkdir(exist_ok=True)
    os.chown(rundir, pw.pw_uid, pw.pw_gid)
    _run(["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D", str(pgdata), "-l", str(log), "-w", "-t", "60",
          "-o", f"-c listen_addresses={LOCAL_HOST} -c port={port} -c unix_socket_directories={rundir}",
          "start"], f"starting the private PostgreSQL cluster in {pgdata} (log {log})")
    deadline = time.monotonic() + 30
    while not _port_open(LOCAL_HOST, port):
        if time.monotonic() > deadline:
            raise DatabaseError(f"private PostgreSQL cluster did not listen on {LOCAL_HOST}:{port}; see {log}")
        time.sleep(0.2)
