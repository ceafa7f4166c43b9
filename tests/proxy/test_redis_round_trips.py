"""What a billed request costs in Redis, with a key carrying an RPM and a TPM limit and a
worker with a concurrency limit (production's shape): one script on its way in (the limits'
admission and the worker's slot), one on its way out (tokens corrected, slots freed), and
its worker's circuit read from memory."""

from __future__ import annotations

import pytest

from accounts.models import ApiKey
from billing.models import Hold
from proxy.ground.redis_pipeline import PipelinedRedis
from proxy.upstream.capacity import in_flight

MESSAGES = [{"role": "user", "content": "Hello there"}]


@pytest.fixture
def commands(monkeypatch) -> list[str]:
    """The name of every command the router sends to Redis (scripts by their digest)."""
    sent: list[str] = []
    one, many, now = PipelinedRedis.execute, PipelinedRedis.execute_many, PipelinedRedis.send

    async def counting(self, *args):
        sent.append(str(args[0]).upper())
        return await one(self, *args)

    async def counting_many(self, commands):
        sent.extend(str(command[0]).upper() for command in commands)
        return await many(self, commands)

    def counting_now(self, *args, **options):
        sent.append(str(args[0]).upper())
        return now(self, *args, **options)

    monkeypatch.setattr(PipelinedRedis, "execute", counting)
    monkeypatch.setattr(PipelinedRedis, "send", counting_now)
    monkeypatch.setattr(PipelinedRedis, "execute_many", counting_many)
    return sent


def test_a_request_with_limits_costs_one_command_in_and_one_out(
    openai_worker, make_key, client_for, router, commands
):
    _, secret = make_key()
    ApiKey.objects.filter(prefix=secret[:18]).update(rpm=1000, tpm=1_000_000)
    client = client_for(secret)
    client.chat.completions.create(model="test-model", messages=MESSAGES, max_tokens=5)
    router.drain()  # the first request also read the worker's circuit, once
    commands.clear()

    for _ in range(3):
        client.chat.completions.create(model="test-model", messages=MESSAGES, max_tokens=5)
    router.drain()

    # In: the limits' admission taking the worker's slot; out: the tokens corrected and
    # the slots freed. No circuit read, no separate slot acquire or release.
    assert commands == ["EVALSHA", "EVALSHA"] * 3
    assert not Hold.objects.filter(status="pending").exists()


def test_the_worker_slot_is_freed_whatever_the_end(openai_worker, make_key, client_for,
                                                  router, settings):
    import asyncio

    import openai

    settings.ROUTER_RESERVE_WAIT_MS = 0
    _, poor = make_key(credit_micros=5)
    ApiKey.objects.filter(prefix=poor[:18]).update(rpm=100)
    with pytest.raises(openai.APIStatusError):  # admitted with a slot, then refused: 402
        client_for(poor).chat.completions.create(model="test-model", messages=MESSAGES,
                                                 max_tokens=5)
    _, secret = make_key()
    ApiKey.objects.filter(prefix=secret[:18]).update(tpm=1_000_000)
    for stream in (False, True):
        response = client_for(secret).chat.completions.create(
            model="test-model", messages=MESSAGES, max_tokens=5, stream=stream)
        if stream:
            list(response)
    router.drain()
    held = asyncio.run_coroutine_threadsafe(in_flight(openai_worker.pk), router._loop)
    assert held.result(5) == 0
