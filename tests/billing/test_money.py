from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.money import MoneyError, cost_micros, format_usd, micros_to_usd, usd_to_micros


@pytest.mark.parametrize(
    ("usd", "micros"),
    [("1", 1_000_000), ("0.000001", 1), ("12.5", 12_500_000), ("-3.25", -3_250_000), ("0", 0)],
)
def test_usd_converts_to_micros_exactly(usd, micros):
    assert usd_to_micros(usd) == micros


@pytest.mark.parametrize("bad", ["abc", "1.0000001", "NaN", "Infinity", "", "1e-9"])
def test_amounts_that_are_not_whole_micros_are_refused(bad):
    with pytest.raises(MoneyError):
        usd_to_micros(bad)


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_micros_round_trip_through_usd(micros):
    assert usd_to_micros(micros_to_usd(micros)) == micros
    assert usd_to_micros(format_usd(micros)) == micros


def test_a_cost_is_rounded_up_once_at_the_end():
    # 3 tokens at 0.1 micro-USD each is 0.3 micro-USD: charged as 1, not 0, not 3.
    assert cost_micros(prompt_tokens=3, completion_tokens=0, cached_tokens=0,
                       input_price=Decimal("0.1"), output_price=Decimal("0"),
                       cached_input_price=Decimal("0")) == 1


def test_cached_tokens_are_billed_at_the_cached_price_instead_of_the_input_price():
    cost = cost_micros(prompt_tokens=1000, completion_tokens=10, cached_tokens=400,
                       input_price=Decimal("2"), output_price=Decimal("8"),
                       cached_input_price=Decimal("0.5"))
    assert cost == 600 * 2 + 400 * Decimal("0.5") + 10 * 8


@pytest.mark.parametrize(("prompt", "cached"), [(-1, 0), (5, 6)])
def test_impossible_token_counts_are_refused(prompt, cached):
    with pytest.raises(MoneyError):
        cost_micros(prompt_tokens=prompt, completion_tokens=0, cached_tokens=cached,
                    input_price=Decimal(1), output_price=Decimal(1),
                    cached_input_price=Decimal(1))


def test_cache_writes_are_billed_at_the_cache_write_price_instead_of_the_input_price():
    cost = cost_micros(prompt_tokens=1000, completion_tokens=10, cached_tokens=400,
                       cache_write_tokens=100, input_price=Decimal("2"),
                       output_price=Decimal("8"), cached_input_price=Decimal("0.5"),
                       cache_write_price=Decimal("2.5"))
    assert cost == 500 * 2 + 400 * Decimal("0.5") + 100 * Decimal("2.5") + 10 * 8


@pytest.mark.parametrize(("cached", "written", "write_price"),
                         [(3, 3, Decimal(1)), (0, -1, Decimal(1)), (0, 2, None)])
def test_cache_writes_beyond_the_prompt_or_without_a_price_are_refused(cached, written,
                                                                       write_price):
    with pytest.raises(MoneyError):
        cost_micros(prompt_tokens=5, completion_tokens=0, cached_tokens=cached,
                    cache_write_tokens=written, input_price=Decimal(1),
                    output_price=Decimal(1), cached_input_price=Decimal(1),
                    cache_write_price=write_price)
