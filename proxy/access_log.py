"""One JSON line per API request, on the ``proxy.access`` logger.

Fields: request id, user id, key prefix, model, worker, status, tokens, cost, latency and
time to first token. Never a key or an upstream secret; what the messages said and what
the model answered only when staff turn ROUTER_LOG_CONTENT on (to debug, briefly: the
lines then hold users' data).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

logger = logging.getLogger("proxy.access")

FIELDS = ("request_id", "method", "path", "status", "user_id", "key_prefix", "model",
          "worker", "outcome", "prompt_tokens", "completion_tokens", "cached_tokens",
          "cost_micros", "latency_ms", "ttft_ms")
# Present only in the lines of completions while ROUTER_LOG_CONTENT is on.
CONTENT_FIELDS = ("messages", "reply")


def access_log(**fields: Any) -> None:
    if logger.isEnabledFor(logging.INFO):
        line = {name: fields.get(name) for name in FIELDS}
        line.update((name, fields[name]) for name in CONTENT_FIELDS if name in fields)
        logger.info(orjson.dumps(line).decode())
