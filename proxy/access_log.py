"""One JSON line per API request, on the ``proxy.access`` logger.

Fields: request id, user id, key prefix, model, worker, status, tokens, cost, latency and
time to first token. Never a key, an upstream secret, or what a message said.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

logger = logging.getLogger("proxy.access")

FIELDS = ("request_id", "method", "path", "status", "user_id", "key_prefix", "model",
          "worker", "outcome", "prompt_tokens", "completion_tokens", "cached_tokens",
          "cost_micros", "latency_ms", "ttft_ms")


def access_log(**fields: Any) -> None:
    if logger.isEnabledFor(logging.INFO):
        logger.info(orjson.dumps({name: fields.get(name) for name in FIELDS}).decode())
