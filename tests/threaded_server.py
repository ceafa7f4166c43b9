"""An aiohttp application served on 127.0.0.1 from a thread with its own event loop, so
synchronous tests, the openai SDK and a router on another loop can all call it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Self

import orjson
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


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON, or None when the body was empty or not JSON
    raw: bytes
    peer: Any = None  # the client's (host, port): one per connection it came on


class RecordingServer(ThreadedServer):
    """A stand-in for an upstream API: it records every request it receives and counts the
    streams whose client went away before the end. Subclasses keep their ``behaviour``."""

    behaviour: Any

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self.client_disconnects = 0

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order."""
        with self._lock:
            return list(self._requests)

    def configure(self, **changes: Any) -> None:
        """Change the behaviour for the next requests (fields of its dataclass)."""
        self.behaviour = dataclasses.replace(self.behaviour, **changes)

    async def record(self, request: web.Request) -> RecordedRequest:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        transport = request.transport
        recorded = RecordedRequest(method=request.method, path=request.path,
                                   headers=dict(request.headers), body=body, raw=raw,
                                   peer=transport.get_extra_info("peername") if transport
                                   else None)
        with self._lock:
            self._requests.append(recorded)
        return recorded

    @contextlib.contextmanager
    def counting_disconnects(self) -> Iterator[None]:
        """Around writing a stream: a client that goes away (as the router does to stop a
        stream it no longer needs) is counted, and the handler returns without aiohttp
        logging it."""
        try:
            yield
        except ConnectionError:
            with self._lock:
                self.client_disconnects += 1
        except asyncio.CancelledError:
            with self._lock:
                self.client_disconnects += 1
            raise


def drop_connection(request: web.Request) -> None:
    """Close the connection as a dying upstream process would: what was written is sent,
    then a FIN without the chunked body's end, so the client sees the body cut off."""
    transport = request.transport
    if transport is not None:
        transport.close()
