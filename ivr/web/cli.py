"""``ivr web``: serve the console, add and list its users. Passwords never come from argv: a
prompt (twice), or one line on stdin with --password-stdin."""

from __future__ import annotations

import logging
import sys

import click

from ivr.clitools import database_option, resolve_database_url


@click.group("web")
def web_group() -> None:
    """The web console: serve it, manage its users (docs/web.md)."""


@web_group.command("serve")
@database_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (loopback unless you mean it).")
@click.option("--port", default=None, type=click.IntRange(1, 65535), envvar="IVR_WEB_PORT",
              help="Port (default: IVR_WEB_PORT, else 8093).")
def serve_cmd(database_url: str | None, host: str, port: int | None) -> None:
    """Run the web console until interrupted."""
    from ivr.config import ConfigError, load_settings
    from ivr.web.app import DEFAULT_PORT, run
    from models.db import make_async_engine, mask_url
    from models.migrate import DatabaseUnavailable, check_connection

    url = resolve_database_url(database_url)
    try:
        check_connection(url)
    except DatabaseUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    try:
        settings = load_settings()
    except ConfigError:
        settings = None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    port = port or DEFAULT_PORT
    click.echo(f"web console on http://{host}:{port}/ (database {mask_url(url)})")
    run(make_async_engine(url), settings, host=host, port=port)


@web_group.group("user")
def user_group() -> None:
    """Console users: add, list, password."""


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    return click.prompt("password", hide_input=True, confirmation_prompt=True)


def _run(url: str, work):
    from sqlalchemy.exc import DBAPIError

    from ivr.clitools import run_in_transaction
    from ivr.web.auth import WebAuthError

    try:
        return run_in_transaction(url, work)
    except WebAuthError as exc:
        raise click.ClickException(str(exc)) from None
    except (DBAPIError, OSError) as exc:
        orig = getattr(exc, "orig", None) or exc
        raise click.ClickException(f"database failed: {(str(orig).strip().splitlines() or ['?'])[0]}") from None


@user_group.command("add")
@database_option
@click.argument("login")
@click.option("--role", required=True, type=click.Choice(["admin", "head", "manager"]))
@click.option("--department", default=None, metavar="CODE", help="Head of department: his department.")
@click.option("--operator", default=None, metavar="EXT", help="Manager: his operator extension.")
@click.option("--name", "display_name", default=None, help="Display name (default: the operator's name or the login).")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
def user_add_cmd(database_url: str | None, login: str, role: str, department: str | None, operator: str | None,
                 display_name: str | None, password_stdin: bool) -> None:
    """Add console user LOGIN with a role (admin, head, manager)."""
    from ivr.web.auth import WebAuthError, add_user, check_password_rules, validate_login

    try:
        validate_login(login)
        password = _read_password(password_stdin)
        check_password_rules(password)
    except WebAuthError as exc:
        raise click.ClickException(str(exc)) from None
    user = _run(resolve_database_url(database_url),
                lambda conn: add_user(conn, login, password, role, display_name=display_name,
                                      department_code=department, operator_extension=operator))
    click.echo(f"added web user {user.login} ({user.role})")


@user_group.command("password")
@database_option
@click.argument("login")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
def user_password_cmd(database_url: str | None, login: str, password_stdin: bool) -> None:
    """Set a new password for LOGIN."""
    from ivr.web.auth import WebAuthError, check_password_rules, set_password

    password = _read_password(password_stdin)
    try:
        check_password_rules(password)
    except WebAuthError as exc:
        raise click.ClickException(str(exc)) from None
    _run(resolve_database_url(database_url), lambda conn: set_password(conn, login, password))
    click.echo(f"password of {login} changed")


@user_group.command("list")
@database_option
def user_list_cmd(database_url: str | None) -> None:
    """Console users with role, department and operator."""
    from ivr.reports.cli import table
    from ivr.web.auth import list_users

    rows = _run(resolve_database_url(database_url), list_users)
    if not rows:
        click.echo("no web users yet (ivr web user add LOGIN --role admin)")
        return
    click.echo(table(["login", "name", "role", "department", "operator", "active"],
                     [[r.login, r.display_name, r.role, r.department or "-", r.operator or "-",
                       "yes" if r.active else "no"] for r in rows]))
