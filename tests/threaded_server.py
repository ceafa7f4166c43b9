"""An aiohttp application served on 127.0.0.1 from a thread with its own event loop, so
synchronous tests, the openai SDK and a router on another loop can all call it."""

from __future__ import annotations

import asyncio
import threading
from typing import Self

from aiohttp import web


class ThreadedServer:
    """Subclasses build their routes in ``_app()``; this class runs and stops them."""

    name = "test-server"

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def _app(self) -> web.Application:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The API's base URL, ``http://127.0.0.1:<port>/v1``."""
        return f"{self.url}/v1"

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError(f"the {self.name} is already running")
        started = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, args=(started, failure),
                                        name=self.name, daemon=True)
        self._thread.start()
        if not started.wait(timeout=10):
            raise RuntimeError(f"the {self.name} did not start in 10 s")
        if failure:
            self._thread.join(timeout=5)
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self, started: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        # A short shutdown: a test may leave a slow stream open when it stops the server.
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=1.0)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)  # port 0: the OS picks a free one
            loop.run_until_complete(site.start())
            self.port = runner.addresses[0][1]
        except BaseException as exc:  # handed to start(), which raises it in the test
            failure.append(exc)
            started.set()
            loop.run_until_complete(runner.cleanup())
            loop.close()
            return
        started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            # A handler still sleeping (a slow first byte whose client gave up) would be
            # destroyed pending by close(): cancel and await it first.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()
