"""ARI adapter: typed REST client, event stream supervisor, per-call dispatch.

Everything the product says to Asterisk over ARI goes through this package.
"""

from .client import AriAuthError, AriClient, AriConflict, AriError, AriNotFound, AriUnavailable, Channel, Playback
from .dispatch import CallDispatcher, CallSession
from .events import AriEvent
from .stream import AriEventStream, Backoff

__all__ = [
    "AriAuthError", "AriClient", "AriConflict", "AriError", "AriNotFound", "AriUnavailable", "Channel", "Playback",
    "CallDispatcher", "CallSession", "AriEvent", "AriEventStream", "Backoff",
]
