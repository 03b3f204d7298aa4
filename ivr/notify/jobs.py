"""The notification job's state machine (pure: no database, no clock).

    pending --schedule--> scheduled --claim--> dialing --confirmed-----> confirmed
                                                      --not_received--> not_received
                                                      --no_action-----> no_action --retry--> scheduled
                                                      --retry---------> scheduled   (busy, no answer, ...)
                                                      --exhaust-------> exhausted   (barrier reached)
                                                      --fail----------> failed
    pending / scheduled / dialing / no_action --expire--> expired  (deadline passed)
    pending / scheduled / no_action            --cancel--> cancelled
    dialing --release--> scheduled (a dialer crashed; the attempt was reconciled)
    dialing --sent--> sent --delivered--> delivered        (SMS: handed to the SMSC, then its receipt)
    sent --retry / exhaust / expire / fail-->               (undelivered receipt, like a failed call)
    dialing --callback--> callback          (speech dialog: he agreed on a time to be called back)
    dialing --hand_over--> handed_over      (speech dialog: unclear twice, asked for a person: a
                                             task for his manager ends the robot's part)

Final states: confirmed, not_received, delivered, callback, handed_over, exhausted, expired,
cancelled, failed. ``no_action`` is
the outcome of an attempt the client listened to without pressing anything: the job then either
goes back to ``scheduled`` (``retry``) or ends (``exhaust`` / ``expire``). A job being dialled
cannot be cancelled: the call is already on the line; the dialer finishes the attempt.
"""

from __future__ import annotations

from types import MappingProxyType

STATES = ("pending", "scheduled", "dialing", "sent", "confirmed", "not_received", "delivered", "callback",
          "handed_over", "no_action", "exhausted", "expired", "cancelled", "failed")
FINAL_STATES = frozenset({"confirmed", "not_received", "delivered", "callback", "handed_over", "exhausted",
                          "expired", "cancelled", "failed"})
# States a dialer may claim (the partial index ix_notification_jobs_due covers exactly these).
CLAIMABLE_STATES = ("pending", "scheduled")

EVENTS = ("schedule", "claim", "confirmed", "not_received", "no_action", "retry", "exhaust", "expire",
          "cancel", "fail", "release", "sent", "delivered", "callback", "hand_over")

# (state, event) -> new state. Anything not listed is forbidden.
TRANSITIONS = MappingProxyType({
    ("pending", "schedule"): "scheduled",
    ("pending", "claim"): "dialing",
    ("pending", "expire"): "expired",
    ("pending", "cancel"): "cancelled",
    ("pending", "fail"): "failed",
    ("scheduled", "claim"): "dialing",
    ("scheduled", "schedule"): "scheduled",   # moved to another time (call window, manual)
    ("scheduled", "expire"): "expired",
    ("scheduled", "cancel"): "cancelled",
    ("scheduled", "fail"): "failed",
    ("dialing", "confirmed"): "confirmed",
    ("dialing", "not_received"): "not_received",
    ("dialing", "no_action"): "no_action",
    ("dialing", "retry"): "scheduled",
    ("dialing", "exhaust"): "exhausted",
    ("dialing", "expire"): "expired",
    ("dialing", "fail"): "failed",
    ("dialing", "release"): "scheduled",
    ("dialing", "sent"): "sent",
    ("dialing", "callback"): "callback",
    ("dialing", "hand_over"): "handed_over",
    ("sent", "delivered"): "delivered",
    ("sent", "retry"): "scheduled",
    ("sent", "exhaust"): "exhausted",
    ("sent", "expire"): "expired",
    ("sent", "fail"): "failed",
    ("no_action", "retry"): "scheduled",
    ("no_action", "exhaust"): "exhausted",
    ("no_action", "expire"): "expired",
    ("no_action", "cancel"): "cancelled",
})

# The job's ``result`` column for a state reached (final states and no_action).
RESULT_OF_STATE = MappingProxyType({s: s for s in FINAL_STATES | {"no_action"}})


class InvalidTransition(ValueError):
    def __init__(self, state: str, event: str):
        self.state = state
        self.event = event
        if state not in STATES:
            message = f"unknown job state {state!r} (known: {', '.join(STATES)})"
        elif event not in EVENTS:
            message = f"unknown event {event!r} (known: {', '.join(EVENTS)})"
        else:
            allowed = sorted(e for (s, e) in TRANSITIONS if s == state)
            message = (f"a job in state {state!r} cannot take event {event!r}; "
                       + (f"allowed: {', '.join(allowed)}" if allowed else f"{state!r} is final"))
        super().__init__(message)


def transition(state: str, event: str) -> str:
    """The state after ``event`` in ``state``; raises InvalidTransition when not allowed."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None


def allowed_events(state: str) -> list[str]:
    return sorted(e for (s, e) in TRANSITIONS if s == state)


def is_final(state: str) -> bool:
    return state in FINAL_STATES
