"""SMS channel: SMPP 3.4 client (ivr.sms.smpp) and a local SMSC for tests (ivr.sms.testing_smsc)."""

from ivr.sms.smpp import (DeliveryReceipt, SmppAuthError, SmppError, SmppSender,
                          SmppSubmitError, SmppUnavailable)

__all__ = ["DeliveryReceipt", "SmppAuthError", "SmppError", "SmppSender", "SmppSubmitError",
           "SmppUnavailable"]
