"""Upstream adapters: one class per kind of worker, all speaking OpenAI's wire format to us."""

from __future__ import annotations

from proxy.upstream.providers.anthropic import AnthropicProvider
from proxy.upstream.providers.base import Provider, UpstreamError, UpstreamTarget
from proxy.upstream.providers.mock import MockProvider
from proxy.upstream.providers.openai import OpenAIProvider

_BY_KIND: dict[str, type[Provider]] = {"mock": MockProvider, "openai": OpenAIProvider,
                                        "anthropic": AnthropicProvider}


def provider_for(target: UpstreamTarget) -> Provider:
    return _BY_KIND[target.kind](target)


__all__ = ["Provider", "UpstreamError", "UpstreamTarget", "provider_for"]
