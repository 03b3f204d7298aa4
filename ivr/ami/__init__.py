"""AMI adapter (panoramisk): connection, login check, health, actions and events."""

from .adapter import AmiAdapter, AmiAuthError, AmiUnavailable

__all__ = ["AmiAdapter", "AmiAuthError", "AmiUnavailable"]
