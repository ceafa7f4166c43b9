"""An event loop in a background thread, for tests of the request path's async database
code: its connection pool lives as long as the loop, the way it does in a server process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections

from billing.services.hot_path import close_pools


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        # ORM calls made from this loop run on asgiref's one sync thread, whose database
        # connection outlives the test that opened it; a later test that terminates the
        # database's other sessions (tests/live_router.py, reconnection tests) leaves it
        # dead. Each loop starts with that thread's connections closed.
        self.run(sync_to_async(connections.close_all)())

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.run(close_pools())
        # And that thread's connection, which ORM calls from this loop opened: left open,
        # it kept the test database from being dropped at the end of the session.
        self.run(sync_to_async(connections.close_all)())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
