"""The wallet of a user, by id, for tests that call the request path's money functions
(which name wallets, not users) directly."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from django.db import connection

from billing.models import Wallet

# A user's wallet never changes within a test; across tests ids may be reused (a migration
# test that takes a table down and up again restarts its sequence: a CI run saw a cached
# id name another test's wallet), so the conftest forgets them after each test.
_known: dict[int, int] = {}


def forget() -> None:
    _known.clear()


def _read(user_id: int) -> int:
    return Wallet.objects.values_list("pk", flat=True).get(user_id=user_id)


def _read_in_a_thread(user_id: int) -> int:
    try:
        return _read(user_id)
    finally:
        connection.close()  # the thread ends here; so must its connection


def wallet_id_of(user_id: int) -> int:
    """Callable from a test's event loop too, where the ORM may not run: there, the one
    read goes to a short-lived thread (the rows are committed: these tests run with
    ``transactional_db``). Read once per user."""
    found = _known.get(user_id)
    if found is None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            found = _read(user_id)
        else:
            with ThreadPoolExecutor(max_workers=1) as pool:
                found = pool.submit(_read_in_a_thread, user_id).result()
        _known[user_id] = found
    return found
