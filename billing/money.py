"""Money is integer micro-USD; prices are Decimal USD per 1M tokens.

1 USD per 1M tokens is exactly 1 micro-USD per token, so a price in USD/1M tokens is also
the price of one token in micro-USD, and a cost is a plain Decimal product, rounded once.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation

MICROS_PER_USD = 1_000_000


class MoneyError(ValueError):
    """An amount that cannot be represented exactly in micro-USD."""


def usd_to_micros(value: Decimal | str | int) -> int:
    """Exact conversion of a USD amount. More than six decimals is refused, never rounded."""
    if isinstance(value, float):  # pragma: no cover - guarded for callers that ignore hints
        raise MoneyError("Money is never a float; pass a Decimal or a string.")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise MoneyError(f"{value!r} is not an amount of USD.") from None
    if not amount.is_finite():
        raise MoneyError(f"{value!r} is not a finite amount of USD.")
    micros = amount * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise MoneyError(f"{value} USD is finer than one micro-USD (6 decimal places).")
    return int(micros)


MICROS_PER_CENT = MICROS_PER_USD // 100


def cents_to_micros(cents: int) -> int:
    """Card payments count in cents (Stripe's ``amount_total``); the ledger in micro-USD."""
    return cents * MICROS_PER_CENT


def micros_to_cents(micros: int) -> int:
    """Exact, for charging a card: an amount finer than a cent is refused, never rounded."""
    cents, rest = divmod(micros, MICROS_PER_CENT)
    if rest:
        raise MoneyError(f"{format_usd(micros)} USD is not a whole number of cents.")
    return cents


def micros_to_usd(micros: int) -> Decimal:
    return Decimal(micros).scaleb(-6)


def format_usd(micros: int) -> str:
    """``12.345678`` for 12_345_678 micros; always six decimals so columns line up."""
    return f"{micros_to_usd(micros):.6f}"


def cost_micros(
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int,
    input_price: Decimal,
    output_price: Decimal,
    cached_input_price: Decimal,
    cache_write_tokens: int = 0,
    cache_write_price: Decimal | None = None,
) -> int:
    """What a request costs, in micro-USD, rounded up once at the end.

    ``cached_tokens`` are the part of ``prompt_tokens`` the upstream served from its prompt
    cache (OpenAI's ``prompt_tokens_details.cached_tokens``), so they are billed at the cached
    price instead of the input price, never on top of it. The sum is exact in Decimal and
    rounded up (ceil) to whole micro-USD: we never charge less than the price says, and never
    more than one micro-USD over it.
    """
    if min(prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens) < 0:
        raise MoneyError("Token counts cannot be negative.")
    if cached_tokens + cache_write_tokens > prompt_tokens:
        raise MoneyError("Cached and cache-written tokens are part of the prompt and cannot "
                         "exceed it.")
    if cache_write_tokens and cache_write_price is None:
        raise MoneyError("Tokens written to the cache need a cache-write price.")
    exact = (
        (prompt_tokens - cached_tokens - cache_write_tokens) * input_price
        + cached_tokens * cached_input_price
        + cache_write_tokens * (cache_write_price or 0)
        + completion_tokens * output_price
    )
    return math.ceil(exact)
