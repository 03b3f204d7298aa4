"""FastAGI server (panoramisk): dialplan steps that need the controller synchronously."""

from .server import AgiServer

__all__ = ["AgiServer"]
