"""Gives each pytest-xdist worker a Redis database of its own.

pytest-django already gives each worker its own test database (``test_test_gw0``, ...);
Redis has no such thing, and transactional tests flush theirs. Loaded with ``-p`` (see
pyproject's addopts), this module runs before pytest-django imports the settings, so it
can move ``REDIS_URL`` to database N - i for worker i (15, 14, ... for the default /15).
Processes the tests start inherit the moved URL; the settings module knows nothing of it.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit


def worker_redis_url(url: str, worker: str) -> str:
    """``url`` with its database moved down by the worker's number (gw0 keeps it)."""
    index = int(worker.removeprefix("gw"))
    parts = urlsplit(url)
    database = int(parts.path.strip("/") or 0)
    if index > database:
        raise ValueError(f"worker {worker} has no Redis database below {url}")
    return urlunsplit(parts._replace(path=f"/{database - index}"))


_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker and os.environ.get("REDIS_URL"):
    os.environ["REDIS_URL"] = worker_redis_url(os.environ["REDIS_URL"], _worker)
