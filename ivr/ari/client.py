"""A small typed ARI REST client over aiohttp.

Why not aioari or ari-client: see docs/decisions.md (speed measured against a plain aiohttp
baseline, reconnect behaviour, event ordering). This client does only what the product uses,
each call is one HTTP request, and errors are typed so call flows can tell "the channel is
already gone" (a normal race in telephony) from "Asterisk is down".
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping
from urllib.parse import quote

import aiohttp


class AriError(Exception):
    """ARI answered with an error status."""

    def __init__(self, method: str, path: str, status: int, message: str):
        self.method, self.path, self.status, self.message = method, path, status, message
        super().__init__(f"ARI {method} {path} -> {status}: {message}")


class AriNotFound(AriError):
    """404: the channel/playback/bridge no longer exists (e.g. the caller hung up)."""


class AriConflict(AriError):
    """409: the resource is not in a state that allows this (e.g. channel not in Stasis)."""


class AriAuthError(AriError):
    """401/403: wrong ARI user or password. Retrying will not help."""


class AriUnavailable(Exception):
    """Asterisk's HTTP server cannot be reached at all."""

    def __init__(self, url: str, reason: str):
        self.url, self.reason = url, reason
        super().__init__(f"Asterisk ARI not reachable at {url}: {reason}")


@dataclass(frozen=True, slots=True)
class Channel:
    id: str
    name: str
    state: str
    caller_number: str
    caller_name: str
    connected_number: str
    exten: str
    context: str
    app_name: str
    app_data: str
    language: str
    creationtime: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Channel":
        caller = data.get("caller") or {}
        connected = data.get("connected") or {}
        dialplan = data.get("dialplan") or {}
        return cls(
            id=data.get("id", ""),
            name=data.get("name", ""),
            state=data.get("state", ""),
            caller_number=caller.get("number", "") or "",
            caller_name=caller.get("name", "") or "",
            connected_number=connected.get("number", "") or "",
            exten=dialplan.get("exten", "") or "",
            context=dialplan.get("context", "") or "",
            app_name=dialplan.get("app_name", "") or "",
            app_data=dialplan.get("app_data", "") or "",
            language=data.get("language", "") or "",
            creationtime=data.get("creationtime", "") or "",
        )

    def in_stasis_app(self, app: str) -> bool:
        """True when the channel sits in Stasis(app,...) - i.e. it is ours to handle."""
        return self.app_name == "Stasis" and self.app_data.split(",", 1)[0] == app


@dataclass(frozen=True, slots=True)
class Playback:
    id: str
    media_uri: str
    state: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Playback":
        return cls(id=data.get("id", ""), media_uri=data.get("media_uri", ""), state=data.get("state", ""))


def _basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _seg(value: str) -> str:
    """A path segment: ids come from Asterisk or from us, but never trust them into a URL."""
    return quote(value, safe="")


class AriClient:
    """ARI REST calls. One instance per controller; shares one aiohttp session."""

    def __init__(
        self,
        base_url: str,
        user: str,
        password: str,
        *,
        request_timeout: float = 10.0,
    ):
        self.base_url = base_url.rstrip("/")
        self.user = user
        self._auth_header = _basic_auth(user, password)
        self._session: aiohttp.ClientSession | None = None  # created lazily inside the event loop
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": self._auth_header},
                connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=30),
                json_serialize=json.dumps,
            )
        return self._session

    @property
    def auth_header(self) -> str:
        return self._auth_header

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> "AriClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        url = f"{self.base_url}/ari{path}"
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            async with self.session.request(
                method, url, params=clean or None, json=body, timeout=self._timeout,
            ) as resp:
                raw = await resp.read()
                if resp.status < 300:
                    return json.loads(raw) if raw else None
                message = raw.decode("utf-8", "replace")
                try:
                    message = json.loads(raw).get("message", message)
                except (ValueError, AttributeError):
                    pass
                cls = {404: AriNotFound, 409: AriConflict, 422: AriConflict, 401: AriAuthError, 403: AriAuthError}.get(
                    resp.status, AriError
                )
                raise cls(method, path, resp.status, message)
        except aiohttp.ClientConnectionError as exc:
            raise AriUnavailable(self.base_url, str(exc) or exc.__class__.__name__) from None
        except TimeoutError:
            raise AriUnavailable(self.base_url, f"{method} {path} timed out") from None

    # --- asterisk -------------------------------------------------------------------------
    async def asterisk_info(self) -> dict[str, Any]:
        return await self.request("GET", "/asterisk/info")

    async def ping(self) -> dict[str, Any]:
        return await self.request("GET", "/asterisk/ping")

    # --- channels -------------------------------------------------------------------------
    async def channels(self) -> list[Channel]:
        return [Channel.from_json(c) for c in await self.request("GET", "/channels")]

    async def channel(self, channel_id: str) -> Channel:
        return Channel.from_json(await self.request("GET", f"/channels/{_seg(channel_id)}"))

    async def answer(self, channel_id: str) -> None:
        await self.request("POST", f"/channels/{_seg(channel_id)}/answer")

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        await self.request("DELETE", f"/channels/{_seg(channel_id)}", params={"reason": reason})

    async def ring(self, channel_id: str) -> None:
        await self.request("POST", f"/channels/{_seg(channel_id)}/ring")

    async def play(
        self,
        channel_id: str,
        media: str | Iterable[str],
        *,
        lang: str | None = None,
        playback_id: str | None = None,
    ) -> Playback:
        media_param = media if isinstance(media, str) else ",".join(media)
        data = await self.request(
            "POST",
            f"/channels/{_seg(channel_id)}/play",
            params={"media": media_param, "lang": lang, "playbackId": playback_id},
        )
        return Playback.from_json(data)

    async def stop_playback(self, playback_id: str) -> None:
        await self.request("DELETE", f"/playbacks/{_seg(playback_id)}")

    async def set_variable(self, channel_id: str, variable: str, value: str) -> None:
        await self.request(
            "POST", f"/channels/{_seg(channel_id)}/variable", params={"variable": variable, "value": value}
        )

    async def get_variable(self, channel_id: str, variable: str) -> str:
        data = await self.request("GET", f"/channels/{_seg(channel_id)}/variable", params={"variable": variable})
        return data.get("value", "")

    async def originate(
        self,
        endpoint: str,
        *,
        app: str,
        app_args: str | None = None,
        channel_id: str | None = None,
        other_channel_id: str | None = None,
        caller_id: str | None = None,
        timeout: int = 30,
        variables: Mapping[str, str] | None = None,
    ) -> Channel:
        body = {"variables": dict(variables)} if variables else None
        data = await self.request(
            "POST",
            "/channels",
            params={
                "endpoint": endpoint,
                "app": app,
                "appArgs": app_args,
                "channelId": channel_id,
                "otherChannelId": other_channel_id,
                "callerId": caller_id,
                "timeout": timeout,
            },
            body=body,
        )
        return Channel.from_json(data)

    async def snoop(self, channel_id: str, *, app: str, snoop_id: str, spy: str = "in",
                    whisper: str = "none", app_args: str | None = None) -> Channel:
        """A snoop channel on ``channel_id`` (``spy=in``: what the caller says), placed into
        ``app``; it leaves the caller's own channel free for playbacks."""
        data = await self.request("POST", f"/channels/{_seg(channel_id)}/snoop", params={
            "spy": spy, "whisper": whisper, "app": app, "appArgs": app_args, "snoopId": snoop_id})
        return Channel.from_json(data)

    async def external_media(self, *, app: str, channel_id: str, external_host: str, fmt: str = "slin16",
                             direction: str = "both") -> Channel:
        """An externalMedia (UnicastRTP) channel: media bridged with it is sent as RTP to
        ``external_host`` (host:port)."""
        data = await self.request("POST", "/channels/externalMedia", params={
            "app": app, "channelId": channel_id, "external_host": external_host, "format": fmt,
            "encapsulation": "rtp", "transport": "udp", "connection_type": "client", "direction": direction})
        return Channel.from_json(data)

    async def continue_in_dialplan(
        self, channel_id: str, *, context: str | None = None, extension: str | None = None, priority: int | None = None
    ) -> None:
        await self.request(
            "POST",
            f"/channels/{_seg(channel_id)}/continue",
            params={"context": context, "extension": extension, "priority": priority},
        )

    # --- bridges --------------------------------------------------------------------------
    async def create_bridge(self, bridge_type: str = "mixing", bridge_id: str | None = None, name: str | None = None) -> str:
        data = await self.request("POST", "/bridges", params={"type": bridge_type, "bridgeId": bridge_id, "name": name})
        return data["id"]

    async def add_to_bridge(self, bridge_id: str, channel_ids: Iterable[str]) -> None:
        await self.request("POST", f"/bridges/{_seg(bridge_id)}/addChannel", params={"channel": ",".join(channel_ids)})

    async def destroy_bridge(self, bridge_id: str) -> None:
        await self.request("DELETE", f"/bridges/{_seg(bridge_id)}")
