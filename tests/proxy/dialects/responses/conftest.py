"""Fixtures of the Responses API tests: the tool-calling upstream behind a worker, and the
SSE reading and checks every Responses test shares."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from billing.models import ModelPrice
from proxy.ground.cache import clear_all_caches
from proxy.models import Worker, WorkerModel
from tests.proxy.dialects.responses.tool_upstream import ToolUpstream


@pytest.fixture
def tool_upstream() -> Iterator[ToolUpstream]:
    with ToolUpstream() as server:
        yield server


@pytest.fixture
def tool_worker(tool_upstream: ToolUpstream, model_price: ModelPrice) -> Worker:
    """``test-model`` served by the tool-calling upstream."""
    worker = Worker(name="tools", kind="openai", base_url=tool_upstream.base_url)
    worker.set_api_key("upstream-secret")
    worker.save()
    WorkerModel.objects.create(worker=worker, model="test-model", upstream_model="gpt-4o-mini")
    clear_all_caches()
    return worker


def sse_events(lines: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each server-sent event, from the stream's lines."""
    events: list[tuple[str, dict[str, Any]]] = []
    name = ""
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            events.append((name, orjson.loads(line[len("data: "):])))
            name = ""
    return events
