"""After PostgreSQL drops the router's connections (a restart, a failover, an admin ending
sessions), the next request is answered, not a 500: the lookups' worker threads and the
billing pool each notice the dead connection and open a new one."""

from __future__ import annotations

import pytest
from django.db import connection

from billing.models import UsageRecord
from proxy.ground.cache import clear_all_caches
from tests.live_router import wait_for_charges

MESSAGES = [{"role": "user", "content": "Hello"}]


def _kill_other_sessions() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0]


@pytest.mark.parametrize("round_", range(2))
def test_every_request_after_the_server_dropped_the_connections_is_answered(
    openai_worker, make_key, client_for, round_
):
    _, secret = make_key()
    client = client_for(secret)
    for _ in range(4):  # warm every lookup thread and pooled connection
        client.chat.completions.create(model="test-model", messages=MESSAGES, max_tokens=5)

    assert _kill_other_sessions() > 0
    clear_all_caches()  # so the key, price and worker are read again, on dead connections

    for _ in range(6):
        reply = client.chat.completions.create(model="test-model", messages=MESSAGES,
                                               max_tokens=5)
        assert reply.choices[0].message.content
    wait_for_charges()
    assert UsageRecord.objects.count() == 10
