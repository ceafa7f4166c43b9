"""The two money invariants (docs/DESIGN.md), over random prices, caps and usage shapes:

* a client never receives more output than its hold covers;
* a charge is never lower than what was delivered (less the tolerance), never higher than
  the hold.

And the plan: without a client cap, the largest cap whose hold fits the room, refused only
when not even one token fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from billing.models import ModelPrice
from billing.selectors import SpendingRoom
from proxy.dialects.chat.request import ChatRequest
from proxy.money.plan import Refused, affordable_cap, plan_with_room, worst_case
from proxy.money.usage_check import allowance, check_usage, tolerance

SETTINGS = settings(max_examples=500, deadline=None, database=None)
MAX_TOKENS = 2**31 - 1


def usd_per_mtok(low: int = 0) -> st.SearchStrategy[Decimal]:
    """A price as the admin stores it: up to 6 decimals and 12 digits; often tiny."""
    micros = st.one_of(st.integers(low, 100), st.integers(low, 10**7),
                       st.integers(low, 10**12 - 1))
    return micros.map(lambda value: Decimal(value).scaleb(-6))


@st.composite
def prices(draw: st.DrawFn, *, free_output: bool = False) -> ModelPrice:
    return ModelPrice(
        model="m",
        input_usd_per_mtok=draw(usd_per_mtok()),
        output_usd_per_mtok=draw(usd_per_mtok(0 if free_output else 1)),
        cached_input_usd_per_mtok=draw(st.none() | usd_per_mtok()),
        max_output_tokens=draw(st.integers(1, 10**4) | st.just(4096)),
    )


# --- usage shapes ------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers(-10**15, 10**15) | st.floats()
           | st.text(max_size=5))
junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=6,
)
not_a_dict = scalars | st.lists(junk, max_size=3)


def numbers(near: tuple[int, int]) -> st.SearchStrategy[Any]:
    """A token count as an upstream might report it: often plausible (around ``near``),
    often not an integer at all."""
    low, high = near
    return st.one_of(
        st.integers(max(0, low - 3), high + 3),
        st.sampled_from([0, 1, -1, MAX_TOKENS, MAX_TOKENS + 1, 2**63, 10**15, -10**15]),
        st.integers(-10**15, 10**15),
        st.floats(), st.integers(0, 10**5).map(float), st.booleans(), st.none(),
        st.integers(0, 10**5).map(str), junk,
    )


MISSING = object()


@st.composite
def plausible_usage(draw: st.DrawFn, prompt_bound: int, completion: tuple[int, int]) -> Any:
    """A usage an honest upstream could send (some of it near the edges of belief)."""
    prompt = draw(st.integers(1, 2 * prompt_bound) | st.sampled_from([1, 2 * prompt_bound]))
    low, high = completion
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": draw(st.integers(max(0, low), high)
                                  | st.sampled_from([max(0, low), high])),
        "total_tokens": 0,
    }
    details = draw(st.sampled_from(["missing", "none", "empty", "cached"]))
    if details == "none":
        usage["prompt_tokens_details"] = None
    elif details == "empty":
        usage["prompt_tokens_details"] = {}
    elif details == "cached":
        usage["prompt_tokens_details"] = {
            "cached_tokens": draw(st.none() | st.integers(0, prompt) | st.just(prompt))}
    return usage


@st.composite
def usage_shapes(draw: st.DrawFn, prompt_bound: int, completion: tuple[int, int]) -> Any:
    kind = draw(st.sampled_from(["missing", "junk", "plausible", "plausible", "spoiled",
                                 "spoiled", "random"]))
    if kind == "missing":
        return None
    if kind == "junk":
        return draw(not_a_dict)
    if kind in ("plausible", "spoiled"):
        usage = draw(plausible_usage(prompt_bound, completion))
        if kind == "spoiled":  # one field of it made implausible or malformed
            name = draw(st.sampled_from(["prompt_tokens", "completion_tokens",
                                         "prompt_tokens_details", "cached_tokens"]))
            value = draw(st.just(MISSING) | numbers((0, 2 * prompt_bound + 1)))
            if name == "cached_tokens":
                if not isinstance(usage.get("prompt_tokens_details"), dict):
                    usage["prompt_tokens_details"] = {}
                target, name = usage["prompt_tokens_details"], "cached_tokens"
            else:
                target = usage
            if value is MISSING:
                target.pop(name, None)
            else:
                target[name] = value
        return usage
    usage = {}
    prompt = draw(st.just(MISSING) | numbers((1, 2 * prompt_bound)))
    if prompt is not MISSING:
        usage["prompt_tokens"] = prompt
    completed = draw(st.just(MISSING) | numbers(completion))
    if completed is not MISSING:
        usage["completion_tokens"] = completed
    details = draw(st.sampled_from(["missing", "none", "junk", "dict"]))
    if details == "none":
        usage["prompt_tokens_details"] = None
    elif details == "junk":
        usage["prompt_tokens_details"] = draw(junk)
    elif details == "dict":
        cached = prompt if isinstance(prompt, int) and not isinstance(prompt, bool) else 0
        usage["prompt_tokens_details"] = draw(st.fixed_dictionaries(
            {}, optional={"cached_tokens": numbers((0, max(0, cached))),
                          "audio_tokens": junk}))
    if draw(st.booleans()):
        usage["total_tokens"] = draw(junk)
    return usage


def is_count(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_TOKENS


def believable(reported: Any, *, complete: bool, prompt_bound: int, cap: int, n: int,
               delivered: int) -> bool:
    """Whether the upstream's usage should be charged as it is (the rules of
    ``usage_check``'s docstring, written again)."""
    if not complete or not isinstance(reported, dict):
        return False
    prompt, completion = reported.get("prompt_tokens"), reported.get("completion_tokens")
    if not (is_count(prompt) and is_count(completion)):
        return False
    details = reported.get("prompt_tokens_details")
    if details is not None:
        if not isinstance(details, dict):
            return False
        cached = details.get("cached_tokens")
        if cached is not None and not (is_count(cached) and cached <= prompt):
            return False
    low = delivered - (-(-delivered // 10) + 2)  # the router's count less 10 % and 2
    return 1 <= prompt <= 2 * prompt_bound and low <= completion <= n * allowance(cap)


@dataclass
class Request:
    price: ModelPrice
    prompt_bound: int
    own_prompt: int
    cap: int
    n: int
    delivered: list[int]
    complete: bool
    reported: Any


@st.composite
def requests(draw: st.DrawFn) -> Request:
    prompt_bound = draw(st.integers(1, 10**5))
    cap = draw(st.integers(1, 10**4))
    n = draw(st.integers(1, 4))
    per_choice = (st.integers(0, allowance(cap)) | st.just(allowance(cap))
                  | st.integers(0, min(5, allowance(cap))))
    delivered = draw(st.lists(per_choice, min_size=n, max_size=n))
    total = sum(delivered)
    return Request(
        price=draw(prices()), prompt_bound=prompt_bound,
        own_prompt=draw(st.integers(1, prompt_bound)), cap=cap, n=n, delivered=delivered,
        complete=draw(st.sampled_from([True, True, True, False])),
        reported=draw(usage_shapes(prompt_bound, (total - tolerance(total),
                                                  n * allowance(cap)))))


@SETTINGS
@given(requests())
def test_a_charge_lies_between_what_was_delivered_and_the_hold(request_: Request) -> None:
    price, cap, n = request_.price, request_.cap, request_.n
    delivered = sum(request_.delivered)
    hold = worst_case(price, request_.prompt_bound, cap, n)
    prompt_counts = []

    def own_prompt() -> int:
        prompt_counts.append(request_.own_prompt)
        return request_.own_prompt

    verdict = check_usage(reported=request_.reported, complete=request_.complete,
                          prompt_bound=request_.prompt_bound, cap=cap, n=n,
                          delivered=delivered, own_prompt=own_prompt)
    cost = price.cost_micros(prompt_tokens=verdict.prompt_tokens,
                             completion_tokens=verdict.completion_tokens,
                             cached_tokens=verdict.cached_tokens)
    charge = min(hold, cost)

    # (a) What the client received, the hold covers.
    assert all(tokens <= allowance(cap) for tokens in request_.delivered)
    assert delivered <= n * allowance(cap)
    assert price.cost_micros(prompt_tokens=0, completion_tokens=delivered) <= hold
    # (b) The charge: not below the output delivered (less the tolerance), not above the hold.
    floor = price.cost_micros(prompt_tokens=0,
                              completion_tokens=max(0, delivered - tolerance(delivered)))
    assert floor <= charge <= hold
    assert verdict.completion_tokens >= delivered - tolerance(delivered)
    # (c) Numbers a usage record can store, and that make sense together.
    for number in (verdict.prompt_tokens, verdict.completion_tokens, verdict.cached_tokens):
        assert type(number) is int
        assert 0 <= number <= MAX_TOKENS
    assert verdict.cached_tokens <= verdict.prompt_tokens
    assert verdict.completion_tokens <= n * allowance(cap)
    assert 1 <= verdict.prompt_tokens <= 2 * request_.prompt_bound
    assert len(prompt_counts) <= 1
    # (d) Believed exactly when well-formed and plausible, and then charged as reported.
    expected = believable(request_.reported, complete=request_.complete,
                          prompt_bound=request_.prompt_bound, cap=cap, n=n,
                          delivered=delivered)
    assert (verdict.reason == "") == expected
    if expected:
        reported = request_.reported
        details = reported.get("prompt_tokens_details") or {}
        assert (verdict.prompt_tokens, verdict.completion_tokens, verdict.cached_tokens) == (
            reported["prompt_tokens"], reported["completion_tokens"],
            details.get("cached_tokens") or 0)
        assert verdict.believed is reported
        assert verdict.source == "provider"
    else:
        assert verdict.believed is None
        assert verdict.source == "estimated"
    event(f"believed: {expected}")


@pytest.mark.parametrize(("tokens", "expected"), [(0, 2), (1, 3), (10, 3), (11, 4), (100, 12),
                                                  (1000, 102)])
def test_the_tolerance_is_ten_percent_rounded_up_plus_two(tokens: int, expected: int) -> None:
    assert tolerance(tokens) == expected
    assert allowance(tokens) == tokens + expected


# --- the plan ----------------------------------------------------------------------------


@st.composite
def rooms(draw: st.DrawFn, price: ModelPrice, prompt: int, n: int) -> int:
    """Room of any size, and often right at the edge of the hold of some cap."""
    near = draw(st.integers(1, max(1, price.max_output_tokens)))
    edge = worst_case(price, prompt, near, n) + draw(st.integers(-2, 2))
    return draw(st.integers(0, 10**9) | st.just(max(0, edge)) | st.integers(-3, 100))


def chat(n: int) -> ChatRequest:
    return ChatRequest(body={"model": "m", "messages": []}, model="m", messages=[],
                       stream=False, include_usage=False, max_tokens=None, n=n)


def check_plan(price: ModelPrice, prompt: int, n: int, room: int) -> None:
    """The plan without a client cap: the largest cap (up to the model's maximum) whose
    hold fits ``room``, refused exactly when not even a cap of one token fits."""
    cap = affordable_cap(price, prompt, n, room)
    if worst_case(price, prompt, 1, n) > room:
        assert cap == 0
        with pytest.raises(Refused) as refused:
            plan_with_room(chat(n), price, prompt, SpendingRoom(wallet_micros=room))
        assert refused.value.error.status == 402
        return
    assert cap >= 1, "refused, but a cap of one token fits the room"
    assert cap <= price.max_output_tokens
    assert worst_case(price, prompt, cap, n) <= room
    if cap < price.max_output_tokens:
        assert worst_case(price, prompt, cap + 1, n) > room, "a larger cap fits the room"
    plan = plan_with_room(chat(n), price, prompt, SpendingRoom(wallet_micros=room))
    assert (plan.prompt_tokens, plan.max_tokens, plan.n) == (prompt, cap, n)
    assert plan.amount_micros == worst_case(price, prompt, cap, n) <= room


@SETTINGS
@given(prices(free_output=True), st.integers(1, 10**5), st.integers(1, 4), st.data())
def test_the_plan_takes_the_largest_cap_whose_hold_fits_the_room(
        price: ModelPrice, prompt: int, n: int, data: st.DataObject) -> None:
    check_plan(price, prompt, n, data.draw(rooms(price, prompt, n), label="room"))


def cheap_model() -> ModelPrice:
    # $0.05 in / $0.08 out per 1M tokens: a 1001-token prompt costs 50.05 micro-USD (51
    # once rounded), and each output token 0.08.
    return ModelPrice(model="m", input_usd_per_mtok=Decimal("0.05"),
                      output_usd_per_mtok=Decimal("0.08"), cached_input_usd_per_mtok=None,
                      max_output_tokens=4096)


def test_a_cheap_model_is_not_refused_when_a_cap_of_one_token_fits() -> None:
    # The hold of caps 1 to 8 is 51 micro-USD (50.05 + 0.08 * allowance, rounded up once).
    assert worst_case(cheap_model(), 1001, 8, 1) == 51
    check_plan(cheap_model(), 1001, 1, 51)


def test_a_cheap_model_gets_the_largest_cap_its_room_affords() -> None:
    # A room of 60 micro-USD affords a cap of 110 (hold 60), not only 101.
    assert worst_case(cheap_model(), 1001, 110, 1) == 60
    check_plan(cheap_model(), 1001, 1, 60)


@SETTINGS
@given(prices(free_output=True), st.integers(1, 10**5), st.integers(1, 4),
       st.lists(st.none() | st.integers(-10, 10**9), min_size=2, max_size=2),
       st.integers(-10, 10**9))
def test_the_plan_fits_the_tightest_of_the_wallet_and_the_key_caps(
        price: ModelPrice, prompt: int, n: int, caps: list[int | None], wallet: int) -> None:
    room = SpendingRoom(wallet_micros=wallet, key_lifetime_micros=caps[0],
                        key_monthly_micros=caps[1])
    tightest = min(value for value in (wallet, *caps) if value is not None)
    try:
        plan = plan_with_room(chat(n), price, prompt, room)
    except Refused:
        assert affordable_cap(price, prompt, n, tightest) == 0
    else:
        assert plan.amount_micros <= tightest
        assert plan.max_tokens == affordable_cap(price, prompt, n, tightest)
