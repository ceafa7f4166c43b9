"""Router processes as production runs them (their own server, the test database), for
tests of what only shows across processes: shared limits, metrics added up."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.db import connection

ROOT = Path(__file__).resolve().parents[1]
# How the processes' database sessions are told apart from this process's own.
APPLICATION_NAME = "router-process-under-test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"nothing answered on port {port}") from None
            time.sleep(0.1)


def env_for_test_database(**extra: str) -> dict[str, str]:
    """This process's environment, pointed at the test database and naming 127.0.0.1 as an
    allowed host."""
    db = connection.settings_dict
    return {**os.environ, "ALLOWED_HOSTS": "127.0.0.1",
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
                            f"?application_name={APPLICATION_NAME}",
            **extra}


class RouterProcess:
    def __init__(self, env: dict[str, str], argv: Sequence[str] | None = None) -> None:
        self.port = free_port()
        # Without a command line, uvicorn; a given one finds its port in PORT (serve.py).
        argv = argv or [sys.executable, "-m", "uvicorn", "router_admin.asgi:application",
                        "--log-level", "warning", "--host", "127.0.0.1",
                        "--port", str(self.port)]
        self.process = subprocess.Popen(list(argv), env={**env, "PORT": str(self.port)},
                                        cwd=ROOT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def stop(self) -> None:
        """SIGTERM, as a process manager stops it: it drains and runs its shutdown."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@contextmanager
def router_processes(count: int, env: dict[str, str], argv: Sequence[str] | None = None
                     ) -> Iterator[list[RouterProcess]]:
    routers = [RouterProcess(env, argv) for _ in range(count)]
    try:
        for router in routers:
            wait_for_port(router.port, router.process)
        yield routers
    finally:
        for router in routers:
            router.stop()
        # Sessions a stopped process may leave for a moment, before the test's flush; only
        # theirs: the in-process live router's stay open.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                           "datname = current_database() AND application_name = %s",
                           [APPLICATION_NAME])


def serve_web_env(**extra: str) -> dict[str, str]:
    """``env_for_test_database`` for ``make serve``'s web server (``SERVE_WEB``): one worker
    on 127.0.0.1, with production mode's required secrets."""
    from tests.router_admin.production import production_env

    secrets = {k: v for k, v in production_env().items()
               if k in ("SECRET_KEY", "ROUTER_ENCRYPTION_KEYS", "EMAIL_HOST")}
    return env_for_test_database(**secrets, WEB_CONCURRENCY="1", HOST="127.0.0.1",
                                 LOG_LEVEL="WARNING", **extra)


SERVE_WEB = [sys.executable, "serve.py", "web"]


class StreamReader(threading.Thread):
    """A stream read through the official OpenAI client in a thread of its own: the words
    received so far, and how it ended (an error when the router was stopped under it)."""

    def __init__(self, client: Any, body: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.client, self.body = client, body
        self.received: list[str] = []
        self.error: BaseException | None = None
        self.ended_at: float | None = None

    def run(self) -> None:
        import openai

        try:
            for chunk in self.client.chat.completions.create(**self.body, stream=True):
                if chunk.choices and chunk.choices[0].delta.content:
                    self.received.append(chunk.choices[0].delta.content)
        except (openai.APIError, openai.APIConnectionError) as error:
            self.error = error
        self.ended_at = time.monotonic()


def until(what: str, check: Callable[[], Any], seconds: float = 15) -> Any:
    """``check()``'s first true value, asked every 50 ms; the test fails after ``seconds``."""
    import pytest

    deadline = time.monotonic() + seconds
    while not (found := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds} s: {what}")
        time.sleep(0.05)
    return found
