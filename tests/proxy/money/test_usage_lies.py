"""An upstream's usage is believed only when it is well-formed and plausible; otherwise the
router charges its own count of what it delivered, and the record says so and why.

Each lie is a real HTTP upstream behaviour (``tests/proxy/lying_upstream.py``), called
through the official openai SDK, whole and streamed.
"""

from __future__ import annotations

import orjson
import pytest

from proxy.ground.tokens import count_text_tokens, exact_prompt_tokens
from tests.openai_schema import validate
from tests.proxy.money.conftest import MESSAGES, settled

PROMPT = exact_prompt_tokens(MESSAGES)  # what the honest upstream reports, and the router

# Each lie, and why the router does not believe it ("" when it does).
LIES = [
    ("honest", ""),
    ("missing", "no_usage"),
    ("zero", "completion_below_output"),  # its prompt of 0 is not believed either
    ("negative", "malformed"),
    ("string", "malformed"),
    ("float", "malformed"),
    ("bool", "malformed"),
    ("huge", "malformed"),  # 10**12: more than the usage record could even store
    ("over", "completion_above_cap"),
    ("under", "completion_below_output"),
    ("prompt_huge", "prompt_implausible"),
    ("prompt_zero", "prompt_implausible"),
    ("cached_over_prompt", "malformed"),
    ("scaled", ""),  # another tokenizer's count, 10 % more: within the tolerance
]


def _call(client, *, stream: bool, **body):
    """(text received, usage shown, cost shown in micro-USD, request id)."""
    if not stream:
        raw = client.chat.completions.with_raw_response.create(
            model="test-model", messages=MESSAGES, **body)
        validate(orjson.loads(raw.http_response.content), "CreateChatCompletionResponse")
        answer = raw.parse()
        cost = int(raw.headers["x-router-cost-micros"])
        assert answer.usage.model_extra["cost"] == pytest.approx(cost / 1e6)
        return (answer.choices[0].message.content, answer.usage, cost,
                raw.headers["x-request-id"])
    raw = client.chat.completions.with_raw_response.create(
        model="test-model", messages=MESSAGES, stream=True,
        stream_options={"include_usage": True}, **body)
    chunks = list(raw.parse())
    for chunk in chunks:
        validate(chunk.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
    # Usage rides only on the router's own last chunk, whatever the upstream did with it.
    assert [c.usage is not None for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1].choices == []
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    return text, usage, round(usage.model_extra["cost"] * 1e6), raw.headers["x-request-id"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(("lie", "reason"), LIES, ids=[lie for lie, _ in LIES])
def test_a_usage_lie_is_charged_for_what_was_delivered_and_flagged(
    liar_worker, liar, make_key, client_for, lie, reason, stream
):
    liar.configure(usage=lie)
    _, secret = make_key()
    text, shown, cost, request_id = _call(client_for(secret), stream=stream, max_tokens=100)

    sent = liar.sent[-1]
    assert text == sent.choices[0].content  # not cut: the honest output fits the cap
    delivered = count_text_tokens(text)
    completion = sent.usage["completion_tokens"] if not reason else delivered
    assert (shown.prompt_tokens, shown.completion_tokens) == (PROMPT, completion)
    assert cost == PROMPT * 1 + completion * 2

    record = settled(request_id)
    assert (record.prompt_tokens, record.completion_tokens, record.cost_micros) == (
        PROMPT, completion, cost)
    assert record.source == ("estimated" if reason else "provider")
    assert record.estimate_reason == reason
    assert not record.over_cap
    assert record.status == "ok"


def test_a_tokenizer_that_counts_more_is_shown_and_charged_the_same_number(
    liar_worker, liar, make_key, client_for
):
    """LiteLLM in front of a model with another tokenizer: 40 reported where o200k counts
    36. The client is shown what it is charged for."""
    liar.configure(usage="scaled", usage_scale=40 / 36,
                   usage_placement="beside_empty_delta")
    _, secret = make_key()
    text, shown, cost, request_id = _call(client_for(secret), stream=True, max_tokens=100)
    reported = liar.sent[-1].usage["completion_tokens"]
    assert reported > count_text_tokens(text)
    record = settled(request_id)
    assert shown.completion_tokens == record.completion_tokens == reported
    assert cost == record.cost_micros == PROMPT + 2 * reported


PLACEMENTS = ["own_chunk", "beside_empty_delta", "beside_finish", "beside_content", "early",
              "every_chunk"]


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_stream_usage_counts_wherever_it_rides_and_settles_when_the_stream_ends(
    liar_worker, liar, make_key, client_for, placement, include_usage
):
    liar.configure(usage_placement=placement)
    _, secret = make_key()
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    raw = client_for(secret).chat.completions.with_raw_response.create(
        model="test-model", messages=MESSAGES, max_tokens=100, stream=True, **options)
    chunks = list(raw.parse())

    sent = liar.sent[-1]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == sent.choices[0].content
    # The upstream was asked for usage, and its usage never reached the client as it was.
    assert liar.requests[-1].body["stream_options"] == {"include_usage": True}
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == (1 if include_usage else 0)
    record = settled(raw.headers["x-request-id"])
    # Every token was delivered before the charge: an early usage chunk does not settle it.
    assert (record.source, record.estimate_reason) == ("provider", "")
    assert record.completion_tokens == sent.usage["completion_tokens"] == count_text_tokens(text)
    assert record.cost_micros == PROMPT + 2 * record.completion_tokens
    if include_usage:
        assert usage_chunks[0].choices == []
        assert usage_chunks[0].usage.completion_tokens == record.completion_tokens


@pytest.mark.parametrize("one_chunk", [False, True], ids=["choice_per_chunk", "all_in_one"])
def test_streamed_choices_are_counted_one_by_one(
    liar_worker, liar, make_key, client_for, one_chunk
):
    """Without usage from the upstream, n=2 is two texts of 62 tokens, not one interleaved
    text (which counts far more)."""
    liar.configure(usage="missing", n_in_one_chunk=one_chunk)
    _, secret = make_key()
    stream = client_for(secret).chat.completions.create(
        model="test-model", messages=MESSAGES, max_tokens=100, n=2, stream=True)
    texts = ["", ""]
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == [liar.lies.reply] * 2
    record = settled()
    assert record.completion_tokens == 2 * liar.lies.reply_tokens
    assert (record.source, record.estimate_reason) == ("estimated", "no_usage")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_choice_nobody_asked_for_is_dropped_and_flagged(
    liar_worker, liar, make_key, client_for, stream
):
    liar.configure(extra_choice=True)
    _, secret = make_key()
    client = client_for(secret)
    if stream:
        indexes = {choice.index for chunk in client.chat.completions.create(
            model="test-model", messages=MESSAGES, max_tokens=100, stream=True)
            for choice in chunk.choices}
    else:
        indexes = {choice.index for choice in client.chat.completions.create(
            model="test-model", messages=MESSAGES, max_tokens=100).choices}
    assert indexes == {0}
    record = settled()
    assert record.over_cap
    # The upstream's count includes the extra choice: more than one choice's allowance.
    assert record.completion_tokens == liar.lies.reply_tokens
