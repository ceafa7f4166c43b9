"""A request that may write its prompt to the upstream's cache holds the prompt at the
cache-write price (when higher than input): whatever the upstream reports writing, the hold
has covered it."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from billing.services import price_set
from proxy.dialects.chat.request import parse_chat_request
from proxy.money import capped_plan
from proxy.money.usage_check import allowance

pytestmark = pytest.mark.django_db


def _plan(body: bytes, **price: str):
    model_price = price_set(model="claude-like", input_usd_per_mtok="3",
                            output_usd_per_mtok="15", **price)
    return capped_plan(parse_chat_request(body), model_price)


PLAIN = b'{"model": "claude-like", "max_tokens": 100, "messages": [{"role": "user", ' \
        b'"content": "Hello there"}]}'
CACHED = b'{"model": "claude-like", "max_tokens": 100, "messages": [{"role": "user", ' \
         b'"content": [{"type": "text", "text": "Hello there", ' \
         b'"cache_control": {"type": "ephemeral"}}]}]}'


def test_a_prompt_marked_for_caching_is_held_at_the_cache_write_price():
    plain, cached = _plan(PLAIN), _plan(CACHED)
    output = allowance(100) * 15
    assert plain.amount_micros == plain.prompt_tokens * 3 + output
    # No cache-write price set: Anthropic's 1.25x of input.
    assert cached.amount_micros == math.ceil(cached.prompt_tokens * Decimal("3.75") + output)


def test_a_cache_write_price_below_input_holds_the_input_price():
    cached = _plan(CACHED, cache_write_usd_per_mtok="1")
    assert cached.amount_micros == cached.prompt_tokens * 3 + allowance(100) * 15
