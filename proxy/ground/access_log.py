"""One JSON line per API request, on the ``proxy.access`` logger.

Fields: request id, user id, key prefix, model, worker, status, tokens, cost, latency and
time to first token. Never a key or an upstream secret; what the messages said and what
the model answered only when staff turn ROUTER_LOG_CONTENT on (to debug, briefly: the
lines then hold users' data).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

import orjson

logger = logging.getLogger("proxy.access")

FIELDS = ("request_id", "method", "path", "status", "user_id", "key_prefix", "model",
          "worker", "outcome", "prompt_tokens", "completion_tokens", "cached_tokens",
          "cost_micros", "latency_ms", "ttft_ms")
# Present only in the lines of completions while ROUTER_LOG_CONTENT is on.
CONTENT_FIELDS = ("messages", "reply")


def access_log(*, request_id: str, method: str | None = None, path: str | None = None,
               status: int | None = None, user_id: int | None = None,
               key_prefix: str | None = None, model: str | None = None,
               worker: str | None = None, outcome: str | None = None,
               prompt_tokens: int | None = None, completion_tokens: int | None = None,
               cached_tokens: int | None = None, cost_micros: int | None = None,
               latency_ms: int | None = None, ttft_ms: int | None = None,
               **content: Any) -> None:
    """Log one request's line; ``content`` is the CONTENT_FIELDS, when they are logged."""
    if not logger.isEnabledFor(logging.INFO):
        return
    line = {"request_id": request_id, "method": method, "path": path, "status": status,
            "user_id": user_id, "key_prefix": key_prefix, "model": model, "worker": worker,
            "outcome": outcome, "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens, "cached_tokens": cached_tokens,
            "cost_micros": cost_micros, "latency_ms": latency_ms, "ttft_ms": ttft_ms}
    for name in CONTENT_FIELDS:
        if name in content:
            line[name] = content[name]
    # The record is made here rather than by logger.info, which walks the stack to find
    # the caller's file and line on every call: always this function, not worth the
    # time on each request. Filters and handlers run as for any record.
    logger.handle(_record(orjson.dumps(line).decode()))


# A record's fields that are the same for every access line of a thread (its file, level,
# process and thread names), by (process, thread): a LogRecord works them out again for
# each record (a path split twice, the process's and the thread's names looked up; with the
# rate-limit headers' single pass, 2.1 % fewer instructions per request at concurrency 64,
# bench/instructions.py).
_templates: dict[tuple[int, threading.Thread], tuple[dict[str, Any], float]] = {}
MAX_TEMPLATES = 64


def _record(message: str) -> logging.LogRecord:
    if logging.getLogRecordFactory() is not logging.LogRecord:
        # An operator's record factory sees every record, made its way.
        return logger.makeRecord(logger.name, logging.INFO, __file__, 0, message, None, None,
                                 "access_log")
    # The thread itself, not its ident: idents are reused by later threads.
    place = (os.getpid(), threading.current_thread())
    known = _templates.get(place)
    if known is None:
        first = logger.makeRecord(logger.name, logging.INFO, __file__, 0, "", None, None,
                                  "access_log")
        if len(_templates) >= MAX_TEMPLATES:
            _templates.clear()
        known = _templates[place] = (dict(first.__dict__), first.created)
    fields, made_at = known
    record = logging.LogRecord.__new__(logging.LogRecord)
    record.__dict__.update(fields)
    now = time.time()
    record.msg = message
    record.created = now
    record.msecs = int((now - int(now)) * 1000) + 0.0  # as LogRecord computes it
    record.relativeCreated = fields["relativeCreated"] + (now - made_at) * 1000
    if "taskName" in fields:  # Python 3.12 and later name the asyncio task that logs
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no event loop in this thread
            task = None
        record.taskName = task.get_name() if task is not None else None
    return record
