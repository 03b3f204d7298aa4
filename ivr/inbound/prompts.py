"""What callers and operators hear, as Asterisk sound names of the Russian prompt set
(language ru_RU_f_IvrvoiceRU, package asterisk-core-sounds-ru). One place, so the wording can be
changed (or replaced by synthesised phrases when the TTS adapter lands) without touching flows.

Each entry is a tuple of sound names played in order; ``digits:NNN`` reads digits.
"""

from __future__ import annotations

# Caller, department closed: «Извините... пожалуйста, перезвоните позже» + callback recorded.
AFTER_HOURS = ("im-sorry", "pls-try-call-later")
# Caller, everyone busy or paused, still waiting: «Все операторы заняты... пожалуйста, ожидайте».
ALL_BUSY = ("tt-allbusy", "pls-hold-while-try")
# Caller, nobody took the call: a callback is recorded. «Никто не может ответить... до свидания».
NOBODY_ANSWERED = ("vm-nobodyavail", "queue-thankyou", "goodbye")
# Caller, the routing failed in a way that needs an apology (never silence).
TECHNICAL_PROBLEM = ("sorry-youre-having-problems", "pls-try-call-later")

# Operator feature codes.
PAUSED = ("do-not-disturb", "activated")
REJOINED = ("do-not-disturb", "de-activated")
LOGGED_IN = ("agent-loginok",)
LOGGED_OUT = ("agent-loggedoff",)
NOT_AN_OPERATOR = ("pbx-invalid",)
CONFIRMED = ("auth-thankyou",)

# *69, call the last caller back: «вызов» + the number's digits while the trunk rings, then a
# ringing tone; nobody to call back: «извините, не могу перезвонить неопознанному абоненту»;
# the number did not answer: «извините, номер не отвечает».
CALLBACK_CALLING = ("calling",)
CALLBACK_NO_NUMBER = ("unidentified-no-callback",)
CALLBACK_NOT_ANSWERED = ("im-sorry", "number-not-answering")
# Transfer (*2 + extension + # during a customer call), heard by the transferring operator only:
# an unknown extension or his own: «трансфер... неверный номер»; the colleague is busy: «занят»;
# the colleague did not answer: «номер не отвечает» (the caller stays with him).
# *2 dialled outside a call: «трансфер... неверный номер».
TRANSFER_INVALID = ("pbx-transfer", "pbx-invalid")
TRANSFER_BUSY = ("is-in-use",)
TRANSFER_NOT_ANSWERED = ("number-not-answering",)

# Summon: the manager hears «с внутреннего номера NNN» (the consultant's floor phone);
# the consultant hears «внутренний номер NNN» (the manager who is coming);
# no manager free: «все операторы заняты»; not confirmed in time: «извините, номер не отвечает».
SUMMON_TO_MANAGER = ("vm-from-extension",)
SUMMON_TO_CONSULTANT = ("extension",)
SUMMON_NO_MANAGER = ("tt-allbusy",)
SUMMON_MISSED = ("im-sorry", "number-not-answering")


def media(sounds: tuple[str, ...], digits: str | None = None) -> list[str]:
    out = [f"sound:{s}" for s in sounds]
    if digits:
        out.append(f"digits:{digits}")
    return out
