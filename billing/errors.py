"""Domain errors of billing; the API layer maps them to OpenAI-shaped responses."""

from __future__ import annotations

import psycopg
from django.db import InterfaceError, OperationalError

from billing.money import format_usd


class BillingError(Exception):
    pass


class InsufficientFunds(BillingError):
    def __init__(self, *, needed_micros: int, available_micros: int,
                 held_micros: int = 0) -> None:
        self.needed_micros = needed_micros
        self.available_micros = available_micros
        # Reserved by requests in flight when it was refused: once they settle (at their
        # actual cost, at most what they hold), there may be room.
        self.held_micros = held_micros
        super().__init__(
            f"This request needs up to ${format_usd(needed_micros)} but the available balance "
            f"is ${format_usd(available_micros)}."
        )


class IdempotencyConflict(BillingError):
    """The idempotency key was already used for a different operation."""


class HoldNotFound(BillingError):
    pass


class InvalidAmount(BillingError):
    pass


class KeySpendCapReached(BillingError):
    """The key's own spend cap, not the wallet, cannot cover the request."""

    def __init__(self, *, needed_micros: int, remaining_micros: int, period: str,
                 held_micros: int = 0) -> None:
        self.needed_micros = needed_micros
        self.remaining_micros = max(0, remaining_micros)
        # "lifetime" or "monthly": the key's; "member lifetime" or "member monthly": its
        # owner's budget in the key's organization.
        self.period = period
        self.held_micros = held_micros  # as for InsufficientFunds
        super().__init__(cap_message(period, needed_micros, self.remaining_micros))


def cap_message(period: str, needed_micros: int, remaining_micros: int) -> str:
    """What a client refused by a spend cap is told (the API's 402 says the same)."""
    left = f"${format_usd(max(0, remaining_micros))}"
    if period.startswith("member "):
        return (f"You have reached your {period.removeprefix('member ')} budget in this "
                f"organization: this request needs up to ${format_usd(needed_micros)} but "
                f"{left} of the budget remains.")
    return (f"This API key has reached its {period} spend cap: this request needs up to "
            f"${format_usd(needed_micros)} but {left} of the cap remains.")


class InvalidAlert(BillingError):
    """Low-balance alert settings that cannot be saved; the message says why."""


class WebhookTargetRefused(InvalidAlert):
    """A webhook URL the router will not send to: not http(s), a host that does not resolve,
    or one that resolves to an address that is not public. Refused when the alert is saved;
    at send time the delivery fails (and is retried: what a name resolves to can change)."""


class WebhookDeliveryFailed(BillingError):
    """The webhook's receiver answered something other than 2xx (a redirect included, which
    is not followed). The delivery is retried later."""


class VoucherInvalid(BillingError):
    """One message for an unknown, used or expired code, so redeeming tells a prober
    nothing about which codes exist."""

    MESSAGE = "This code is not valid, has expired or was already used."

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


class TopUpsDisabled(BillingError):
    """Card top-ups need both Stripe settings; without them the portal says top-ups are off."""

    def __init__(self) -> None:
        super().__init__("Card top-ups are not available: payments are not configured.")


class PaymentProviderError(BillingError):
    """Stripe refused or could not be reached. Nothing was charged; trying again may work."""

    retryable = True


class WebhookRejected(BillingError):
    """A webhook delivery that is not verifiably from Stripe: bad signature, bad payload or
    a timestamp past the tolerance. Nothing was processed."""


class TopUpNotFound(BillingError):
    """No such top-up among the user's own (another user's is as absent as none at all)."""


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached, or no pooled connection freed up within
    ``ROUTER_DB_WAIT_MS``. Not a refusal (hence not a BillingError): nothing was decided
    about the request, and trying again once the database is back may well succeed. A
    statement that failed this way may still have committed: callers make sure it is undone
    or done again, never done twice."""


# Errors that say the database could not be reached, not that it refused the statement: the
# hot path's own, psycopg's, and Django's (the ORM's connections).
UNREACHABLE = (DatabaseUnavailable, psycopg.OperationalError, psycopg.InterfaceError,
               OperationalError, InterfaceError)


class InvalidAutoTopUp(BillingError):
    """Auto top-up settings that cannot be saved (an amount out of bounds, a ceiling below
    the amount, turning it on without a saved card); the message says why."""
