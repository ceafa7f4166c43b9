"""Fixtures of the money-invariant tests: a lying upstream behind a worker, and the checks
every request's money must pass."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from billing.models import Hold, ModelPrice, UsageRecord, Wallet
from billing.selectors import wallet_audit
from proxy.ground.cache import clear_all_caches
from proxy.models import Worker, WorkerModel
from tests.live_router import wait_for_charges
from tests.proxy.lying_upstream import LyingUpstream

MESSAGES = [{"role": "user", "content": "Tell me about the weather."}]


@pytest.fixture
def liar() -> Iterator[LyingUpstream]:
    """A running lying upstream, honest until configured."""
    with LyingUpstream() as server:
        yield server


@pytest.fixture
def liar_worker(liar: LyingUpstream, model_price: ModelPrice) -> Worker:
    """``test-model`` (1 and 2 micro-USD per input and output token, at most 500 output
    tokens) served by the lying upstream, its cap sent as ``max_tokens``."""
    worker = Worker.objects.create(name="liar", kind="openai", base_url=liar.base_url)
    WorkerModel.objects.create(worker=worker, model="test-model", upstream_model="gpt-liar")
    clear_all_caches()
    return worker


def answer_text(client: Any, *, stream: bool, max_tokens: int = 100) -> str:
    """The text of one answer to MESSAGES from ``test-model``, whole or streamed, through
    the official client."""
    if not stream:
        return client.chat.completions.create(
            model="test-model", messages=MESSAGES,
            max_tokens=max_tokens).choices[0].message.content
    return "".join(chunk.choices[0].delta.content or ""
                   for chunk in client.chat.completions.create(
                       model="test-model", messages=MESSAGES, max_tokens=max_tokens,
                       stream=True)
                   if chunk.choices)


def set_cap_field(worker: Worker, cap_field: str) -> None:
    worker.cap_field = cap_field
    worker.save()
    clear_all_caches()


def settled(request_id: str | None = None) -> UsageRecord:
    """The request's usage record (the only one, without an id), once every hold is
    resolved: see ``all_settled``."""
    all_settled()
    if request_id is None:
        return UsageRecord.objects.get()
    return UsageRecord.objects.get(request_id=request_id)


def all_settled() -> None:
    """Wait until every hold is resolved by its own request (the sweeper's TTL is 15
    minutes; this waits seconds at most); then every wallet equals its ledger and holds
    nothing."""
    wait_for_charges(timeout=5)
    assert not Hold.objects.filter(status="pending").exists()
    for wallet in Wallet.objects.all():
        audit = wallet_audit(wallet_id=wallet.pk)
        assert audit.consistent, audit
        assert wallet.pending_micros == 0
        assert wallet.posted_micros >= 0
