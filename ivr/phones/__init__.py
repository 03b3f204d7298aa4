"""Real SIP test phones (sipp, baresip) for end-to-end tests and demos."""

from .sipp import AnsweredCall, CallResult, PhoneError, SippAnswerer, SippCaller, free_udp_port

__all__ = ["AnsweredCall", "CallResult", "PhoneError", "SippAnswerer", "SippCaller", "free_udp_port"]

from .baresip import BaresipPhone, BaresipResult  # noqa: E402

__all__ += ["BaresipPhone", "BaresipResult"]
