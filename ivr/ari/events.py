"""ARI events as a thin typed view over the JSON Asterisk sends.

Parsing is lazy on purpose: the event reader parses JSON once and hands the event on; only
the call flow that needs a field pays for turning it into an object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .client import Channel

# Synthetic events the controller itself produces (never sent by Asterisk).
CHANNEL_RECOVERED = "IvrChannelRecovered"  # we found the channel in our app after a reconnect
CHANNEL_GONE = "IvrChannelGone"  # the channel vanished while the websocket was down


@dataclass(slots=True)
class AriEvent:
    type: str
    data: dict[str, Any]

    @classmethod
    def synthetic(cls, event_type: str, channel: dict[str, Any] | None = None, **fields: Any) -> "AriEvent":
        data: dict[str, Any] = {"type": event_type, **fields}
        if channel is not None:
            data["channel"] = channel
        return cls(event_type, data)

    @property
    def channel_id(self) -> str | None:
        channel = self.data.get("channel")
        if channel:
            return channel.get("id")
        playback = self.data.get("playback") or self.data.get("recording")
        if playback:
            target = playback.get("target_uri", "")
            if target.startswith("channel:"):
                return target[len("channel:"):]
        return None

    @property
    def channel(self) -> Channel | None:
        raw = self.data.get("channel")
        return Channel.from_json(raw) if raw else None

    @property
    def args(self) -> list[str]:
        return list(self.data.get("args") or [])

    @property
    def digit(self) -> str:
        return self.data.get("digit", "")

    @property
    def playback_id(self) -> str:
        return (self.data.get("playback") or {}).get("id", "")

    @property
    def cause(self) -> int | None:
        return self.data.get("cause")

    @property
    def cause_txt(self) -> str:
        return self.data.get("cause_txt", "")

    @property
    def timestamp(self) -> str:
        return self.data.get("timestamp", "")
