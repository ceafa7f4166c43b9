"""The router itself, served by uvicorn on a free local port in a background thread, and
the fixtures that share one such router among every test that calls it over HTTP (the proxy
tests with the openai SDK, the portal's browser tests)."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import uvicorn
from django.conf import settings
from django.db import connection
from django.test import override_settings

from serve import HTTP_PROTOCOL


def router_code(filename: str) -> bool:
    """Whether ``filename`` is the router's own code: in the repository, not a test's nor
    the virtualenv's."""
    return filename.startswith(str(Path(settings.BASE_DIR))) and not any(
        part in filename for part in ("/tests/", "/site-packages/"))


def wait_for_charges(timeout: float = 10) -> None:
    """Wait until no hold is pending, in whichever router process it was taken: a whole
    answer reaches its client a moment before its charge is written, and a dropped stream
    settles a moment after the client goes."""
    from billing.models import Hold

    deadline = time.monotonic() + timeout
    while Hold.objects.filter(status="pending").exists() and time.monotonic() < deadline:
        time.sleep(0.02)


class LiveRouter:
    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config("router_admin.asgi:application", log_level="warning",
                                lifespan="on", timeout_graceful_shutdown=2,
                                http=HTTP_PROTOCOL)  # as serve.py runs it
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
        from proxy.money import wait_for_settlements

        wait_for_charges(timeout)
        asyncio.run_coroutine_threadsafe(wait_for_settlements(), self._loop).result(timeout)

    @contextmanager
    def loop_closed_generators(self) -> Iterator[list[str]]:
        """The router's own async generators that its event loop had to close while the
        block ran (by name): a generator dropped before its end is closed by the loop's
        finalizer hook, with a task of its own and a wake-up of the loop from outside."""
        found: list[str] = []

        async def watch() -> Any:
            hooks = sys.get_asyncgen_hooks()  # the loop's, set in its own thread

            def finalizer(generator: Any) -> None:
                if router_code(generator.ag_code.co_filename):
                    found.append(generator.ag_code.co_qualname)
                hooks.finalizer(generator)

            sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=finalizer)
            return hooks

        async def restore(hooks: Any) -> None:
            sys.set_asyncgen_hooks(*hooks)

        hooks = asyncio.run_coroutine_threadsafe(watch(), self._loop).result(5)
        try:
            yield found
        finally:
            asyncio.run_coroutine_threadsafe(restore(hooks), self._loop).result(5)

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


@pytest.fixture(scope="session")
def live_router(django_db_setup, django_db_blocker) -> Iterator[LiveRouter]:
    # Clients of the live router name it by its address; the site checks the Host header.
    # Tests run without collectstatic, so the site serves static files from the apps'
    # folders, as the embedded default does (read once, when the app is first loaded).
    hosts = override_settings(ALLOWED_HOSTS=[*settings.ALLOWED_HOSTS, "127.0.0.1"],
                              WHITENOISE_USE_FINDERS=True)
    hosts.enable()
    router = LiveRouter().start()
    yield router
    router.stop()
    hosts.disable()
    with django_db_blocker.unblock():
        end_other_sessions()


def end_other_sessions() -> None:
    """End every other session of the test database: a stopped router's executor threads
    keep their connections, which would stop the database from being dropped."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")


def forget_shared_state() -> None:
    """Cached keys, prices and workers, and breaker, capacity and limit state, of this
    process: they must not leak from one test's database to the next."""
    from proxy.ground.cache import clear_all_caches
    from proxy.limits import reset_local_limits
    from proxy.money.refusals import forget_refusals
    from proxy.upstream.breaker import reset_local_breakers
    from proxy.upstream.capacity import reset_local_slots

    clear_all_caches()
    reset_local_breakers()
    reset_local_slots()
    reset_local_limits()
    forget_refusals()


def flush_redis() -> None:
    """Breaker, slot and limit state that earlier tests left in Redis."""
    if settings.REDIS_URL:
        redis.Redis.from_url(settings.REDIS_URL).flushdb()


@pytest.fixture
def mock_model(transactional_db) -> None:
    """``mock-gpt`` at 1 micro-USD per token, served by the offline ``mock`` worker."""
    from billing.services import price_set
    from proxy.ground.cache import clear_all_caches
    from proxy.models import Worker, WorkerModel

    price_set(model="mock-gpt", input_usd_per_mtok="1", output_usd_per_mtok="1")
    WorkerModel.objects.create(worker=Worker.objects.create(name="mock", kind="mock"),
                               model="mock-gpt")
    clear_all_caches()


@pytest.fixture
def router(live_router: LiveRouter, transactional_db) -> Iterator[LiveRouter]:
    """The live router, drained after the test so no late settlement races the teardown."""
    flush_redis()
    yield live_router
    live_router.drain()
