"""What /v1/models says of a model: OpenAI's fields, and what a prepaid user looks for first,
its prices (USD per token as exact decimal text, OpenRouter's names), its context and output
limits, and the endpoints that serve it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from billing.models import ModelKind, ModelPrice

CHAT_ENDPOINTS = ("chat", "responses", "messages", "completions")
ENDPOINTS = {ModelKind.CHAT: CHAT_ENDPOINTS, ModelKind.EMBEDDING: ("embeddings",),
             ModelKind.BOTH: (*CHAT_ENDPOINTS, "embeddings")}


def per_token(usd_per_mtok: Decimal) -> str:
    """USD per 1M tokens as USD per token, exact, in plain notation: 0.15 -> "0.00000015"."""
    value = usd_per_mtok.scaleb(-6)
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def model_object(price: ModelPrice) -> dict[str, Any]:
    return {
        "id": price.model, "object": "model",
        "created": int(price.effective_from.timestamp()), "owned_by": "binom-router",
        "pricing": {
            "prompt": per_token(price.input_usd_per_mtok),
            "completion": per_token(price.output_usd_per_mtok),
            "input_cache_read": per_token(price.cached_price),
            "input_cache_write": per_token(price.cache_write_price),
        },
        "context_length": price.context_length,
        "max_output_tokens": price.max_output_tokens,
        "endpoints": list(ENDPOINTS.get(price.kind, CHAT_ENDPOINTS)),
    }
