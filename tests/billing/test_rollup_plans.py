"""The usage roll-up's day statement joins by hashing, whatever the planner guesses: the
roll-ups' statistics never cover today's buckets, and with the guess of one stored row a
nested loop compared every stored bucket with every fresh one (15 s for 10,000 buckets at
10M records). Its plan is read from the run itself (EXPLAIN of the statement as the job
sends it, in the job's transaction and settings)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from accounts.services import user_create
from billing.services import UsageReport, hold_create, hold_settle, price_set, wallet_credit
from billing.services.rollup_statements import DAY_REFRESH_SQL
from billing.services.rollups import usage_rollup

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif("connection.vendor != 'postgresql'",
                       reason="the plans of PostgreSQL are what is checked"),
]


def _plans_of_runs(run) -> list[str]:
    plans: list[str] = []

    def explained(execute, sql, params, many, context):
        if sql == DAY_REFRESH_SQL:
            execute("EXPLAIN " + sql, params, many, context)
            plans.append("\n".join(row[0] for row in context["cursor"].fetchall()))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explained):
        run()
    return plans


def test_a_day_is_rolled_up_with_hash_joins_even_when_the_statistics_know_nothing_of_it():
    price = price_set(model="plan-model", input_usd_per_mtok="1", output_usd_per_mtok="1",
                      max_output_tokens=100, effective_from=timezone.now() - timedelta(days=1))
    users = [user_create(email=f"plan{i}@example.com") for i in range(30)]
    for index, user in enumerate(users):
        wallet_credit(user=user, amount_micros=1_000_000, idempotency_key=f"plan-{index}",
                      memo="plan")
        hold_create(user=user, hold_id=f"plan-{index}", amount_micros=1_000, price=price,
                    model=price.model)
        hold_settle(hold_id=f"plan-{index}", usage=UsageReport(prompt_tokens=10,
                                                               completion_tokens=5))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE billing_usagerollup")  # statistics of a table with no row
    now = timezone.now()
    usage_rollup(since=now - timedelta(hours=1), until=now)

    plans = _plans_of_runs(lambda: usage_rollup(since=now - timedelta(hours=1), until=now))

    assert plans
    for plan in plans:
        assert "Hash Join" in plan
        assert "Nested Loop" not in plan, plan
