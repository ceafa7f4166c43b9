"""The wallet of a user, by id, for tests that call the request path's money functions
(which name wallets, not users) directly."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from billing.models import Wallet


def wallet_id_of(user_id: int) -> int:
    """Read in a thread of its own, so that a test's event loop may call it too (the rows
    are committed: these tests run with ``transactional_db``)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: Wallet.objects.get(user_id=user_id).pk).result()
