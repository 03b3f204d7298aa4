"""The one place the product talks AMI, through panoramisk 1.4.

panoramisk's ``connect()`` returns before login completes and reports a failed login only by
leaving ``authenticated`` False, so this adapter turns login into an awaitable with a clear
outcome: connected, wrong credentials (fatal), or unreachable (panoramisk keeps reconnecting
by itself every ``reconnect_timeout`` seconds). Health is a real round trip (Ping).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from panoramisk import Manager

log = logging.getLogger("ivr.ami")

# panoramisk logs a stack trace for every failed connect; we log one line ourselves instead.
_quiet = logging.getLogger("ivr.ami.panoramisk")
_quiet.setLevel(logging.CRITICAL)


class AmiAuthError(Exception):
    pass


class AmiUnavailable(Exception):
    pass


class _Manager(Manager):
    """panoramisk Manager that reports each login outcome to the adapter."""

    def __init__(self, adapter: "AmiAdapter", **config: Any):
        super().__init__(**config)
        self._adapter = adapter

    def login(self, future):  # called by panoramisk when the Login response arrives
        ok = super().login(future)
        self._adapter._on_login_result(ok, future)
        return ok

    def connection_lost(self, exc):
        self._adapter._on_connection_lost()
        super().connection_lost(exc)


class AmiAdapter:
    def __init__(self, host: str, port: int, username: str, secret: str, *, reconnect_timeout: int = 2):
        self.host, self.port, self.username = host, port, username
        self.manager = _Manager(
            self, host=host, port=port, username=username, secret=secret,
            ping_delay=10, ping_interval=10, reconnect_timeout=reconnect_timeout, log=_quiet,
        )
        self._login_waiter: asyncio.Future[bool] | None = None
        self.logged_in = False
        self.login_failed = False

    @property
    def url(self) -> str:
        return f"ami://{self.host}:{self.port}"

    def _on_login_result(self, ok: bool, future: asyncio.Future) -> None:
        self.logged_in = ok
        if ok:
            log.info("event=ami_logged_in url=%s user=%s", self.url, self.username)
        else:
            self.login_failed = True
            message = ""
            try:
                message = future.result().get("Message", "")
            except Exception:  # the response itself may be the failure
                pass
            log.error("event=ami_login_failed url=%s user=%s message=%r", self.url, self.username, message)
        if self._login_waiter and not self._login_waiter.done():
            self._login_waiter.set_result(ok)

    def _on_connection_lost(self) -> None:
        if self.logged_in:
            log.warning("event=ami_connection_lost url=%s reconnecting=true", self.url)
        self.logged_in = False

    async def connect(self, timeout: float = 10.0) -> None:
        """Connect and log in. Raises AmiAuthError (wrong user/secret) or AmiUnavailable."""
        loop = asyncio.get_running_loop()
        self.manager.loop = loop
        self._login_waiter = loop.create_future()
        self.manager.connect()
        try:
            ok = await asyncio.wait_for(asyncio.shield(self._login_waiter), timeout)
        except TimeoutError:
            raise AmiUnavailable(f"AMI not reachable at {self.url} within {timeout:.0f}s") from None
        if not ok:
            self.close()
            raise AmiAuthError(f"AMI login refused at {self.url} for user {self.username!r}: wrong user or secret")

    async def ping(self, timeout: float = 3.0) -> bool:
        if not self.logged_in:
            return False
        try:
            response = await asyncio.wait_for(self.manager.send_action({"Action": "Ping"}), timeout)
        except (TimeoutError, OSError, AttributeError):
            return False
        return getattr(response, "success", False) or response.get("Response") == "Success"

    async def action(self, action: dict[str, Any], timeout: float = 10.0) -> Any:
        if not self.logged_in:
            raise AmiUnavailable(f"AMI not connected at {self.url}")
        return await asyncio.wait_for(self.manager.send_action(action), timeout)

    async def command(self, cli_command: str, timeout: float = 10.0) -> str:
        """Run an Asterisk CLI command over AMI and return its output."""
        response = await self.action({"Action": "Command", "Command": cli_command}, timeout)
        output = response.get("Output", "") if hasattr(response, "get") else ""
        return "\n".join(output) if isinstance(output, list) else str(output)

    def on_event(self, pattern: str, callback: Callable[[Any, Any], Any]) -> None:
        self.manager.register_event(pattern, callback)

    def close(self) -> None:
        self.manager.close()
        # Stop panoramisk's own reconnect timer from resurrecting the connection.
        self.manager.connection_lost = lambda exc: None  # type: ignore[method-assign]
        self.logged_in = False
