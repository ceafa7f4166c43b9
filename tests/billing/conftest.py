"""Fixtures of the billing tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.loop_thread import LoopThread


@pytest.fixture(scope="module")
def loop(django_db_setup, django_db_blocker) -> Iterator[LoopThread]:
    """An event loop in a thread for the request path's async statements, one per module:
    its connection pool lives as long as the loop, as in a server process."""
    loop = LoopThread()
    yield loop
    with django_db_blocker.unblock():
        loop.close()
