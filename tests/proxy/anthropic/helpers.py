"""Workers, prices and checks for the Anthropic tests that go through the router."""

from __future__ import annotations

import itertools
import math
from decimal import Decimal

from billing.models import Hold, LedgerEntry, Wallet
from proxy.models import Worker, WorkerModel
from tests.proxy.anthropic.samples import CACHED, INPUT, OUTPUT
from tests.proxy.anthropic.upstream import AnthropicServer

_names = itertools.count(1)


def anthropic_worker_for(server: AnthropicServer, *, priority: int = 0, key: str = "sk-ant-test"
            ) -> Worker:
    worker = Worker(name=f"anthropic-{next(_names)}", kind="anthropic",
                    base_url=server.base_url, priority=priority)
    worker.set_api_key(key)
    worker.save()
    WorkerModel.objects.create(worker=worker, model="claude-test",
                               upstream_model="claude-3-5-haiku-latest")
    return worker



def cost_of(prompt: int, completion: int, cached: int = 0, written: int = 0) -> int:
    """Cache reads at the cached price, cache writes at 1.25x input (no cache-write price
    set: Anthropic's 5-minute rate)."""
    return math.ceil((prompt - cached - written) * INPUT + cached * CACHED
                     + written * INPUT * Decimal("1.25") + completion * OUTPUT)


def wallet_of(user_id: int) -> Wallet:
    return Wallet.objects.get(user_id=user_id)


def assert_nothing_charged(user_id: int) -> None:
    wallet = wallet_of(user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000_000, 0)
    assert not LedgerEntry.objects.filter(kind="charge").exists()
    assert not Hold.objects.filter(status="pending").exists()
