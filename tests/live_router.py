"""The router itself, served by uvicorn on a free local port in a background thread."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import uvicorn


class LiveRouter:
    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config("router_admin.asgi:application", log_level="warning",
                                lifespan="on", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="live-router", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._server.serve(sockets=[self._sock]))
        self._loop.close()

    def drain(self, timeout: float = 10) -> None:
        """Wait until the pending holds are settled (a dropped stream settles a moment after
        the client goes) and no settlement is in flight, so a test sees final balances and
        its teardown does not race a late write."""
        from billing.models import Hold
        from proxy.charging import wait_for_settlements

        deadline = time.monotonic() + timeout
        while Hold.objects.filter(status="pending").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        asyncio.run_coroutine_threadsafe(wait_for_settlements(), self._loop).result(timeout)

    def start(self) -> LiveRouter:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the router did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
