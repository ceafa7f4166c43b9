"""The admin's dashboard: every panel's figures equal direct queries over the usage
records, the ledger and the holds; the page is staff's only; its cost in queries does not
grow with the history."""

from __future__ import annotations

import math
import random
from datetime import timedelta

import pytest
from django.db.models import Count, Q, Sum
from django.utils import timezone

from billing.models import CheckoutTopUp, LedgerEntry, OutboxMessage, UsageRecord
from billing.services.holds import hold_create
from billing.services.rollups import usage_rollup
from billing.services.wallets import wallet_credit
from proxy.models import Worker
from proxy.rollup_service import worker_rollup
from proxy.rollups import WorkerRollup
from proxy.tasks import worker_rollup_task
from router_admin.dashboard.fleet import fleet_read, percentile_range
from router_admin.dashboard.money import RUN_OUT_DAYS, money_in, spenders
from router_admin.dashboard.ops import deliveries_failing, holds_pending
from router_admin.dashboard.periods import PERIODS, window_for
from tests.staff import staff_sign_in

WORKERS = ["alpha", "beta", "gamma", ""]
MODELS = ["m-small", "m-large", "m-embed"]


def _history(users, price, count: int, seed: int, days: int = 40) -> None:
    rng = random.Random(seed)
    now = timezone.now()
    records = [UsageRecord(
        request_id=f"d{seed}-{i}", user=rng.choice(users), model=rng.choice(MODELS),
        worker=rng.choice(WORKERS), prompt_tokens=rng.randint(0, 4000),
        completion_tokens=rng.randint(0, 1500), cost_micros=rng.randint(0, 20_000),
        upstream_cost_micros=rng.choice([None, rng.randint(0, 15_000), rng.randint(0, 9000)]),
        price=price, status=rng.choice(["ok", "ok", "ok", "cancelled", "upstream_error"]),
        latency_ms=rng.choice([None, int(rng.lognormvariate(6.5, 1.2))]),
        ttft_ms=rng.choice([None, int(rng.lognormvariate(5.5, 1.0))]),
    ) for i in range(count)]
    UsageRecord.objects.bulk_create(records)
    for record in records:
        UsageRecord.objects.filter(pk=record.pk).update(
            created_at=now - timedelta(minutes=rng.randint(0, days * 24 * 60)))
    usage_rollup(since=now - timedelta(days=days + 1), until=now)
    worker_rollup(since=now - timedelta(days=days + 1), until=now)


@pytest.fixture
def history(make_user, price):
    users = [make_user() for _ in range(5)]
    for user in users[:3]:  # two users never had a wallet credited
        wallet_credit(user=user, amount_micros=50_000, idempotency_key=f"seed-{user.pk}",
                      memo="seed")
    _history(users, price, 600, seed=7)
    return users


def _nearest_rank(values: list[int], fraction: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


@pytest.mark.parametrize("period", list(PERIODS))
def test_fleet_figures_equal_direct_queries_over_the_records(history, period):
    window = window_for(period, timezone.now())
    fleet = fleet_read(window)
    records = UsageRecord.objects.filter(created_at__gte=window.start)
    for dimension, breakdown in (("worker", fleet.by_worker), ("model", fleet.by_model)):
        direct = {row[dimension]: row for row in records.values(dimension).annotate(
            requests=Count("id"), failed=Count("id", filter=~Q(status="ok")),
            prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"),
            cost=Sum("cost_micros"), upstream=Sum("upstream_cost_micros"),
            known=Sum("cost_micros", filter=Q(upstream_cost_micros__isnull=False)),
            unknown=Count("id", filter=Q(upstream_cost_micros__isnull=True)))}
        assert set(breakdown) == set(direct)
        for name, totals in breakdown.items():
            row = direct[name]
            assert (totals.requests, totals.failed, totals.prompt_tokens,
                    totals.completion_tokens, totals.cost_micros, totals.unknown_cost_requests
                    ) == (row["requests"], row["failed"], row["prompt"], row["completion"],
                          row["cost"], row["unknown"])
            assert totals.margin_micros == (row["known"] or 0) - (row["upstream"] or 0)
    assert fleet.total.cost_micros == records.aggregate(s=Sum("cost_micros"))["s"]
    for worker, totals in fleet.by_worker.items():
        mine = records.filter(worker=worker)
        for hist, field in ((totals.latency, "latency_ms"), (totals.ttft, "ttft_ms")):
            values = list(mine.exclude(**{f"{field}__isnull": True})
                          .values_list(field, flat=True))
            if not values:
                assert percentile_range(hist, 0.5) is None
                continue
            for fraction in (0.5, 0.95):
                low, high = percentile_range(hist, fraction)
                exact = _nearest_rank(values, fraction)
                assert low <= exact
                assert (high is None or exact < high)


@pytest.mark.parametrize("period", list(PERIODS))
def test_top_users_and_running_out_equal_direct_queries(history, period):
    window = window_for(period, timezone.now())
    found = spenders(window)
    spend = dict(UsageRecord.objects.filter(created_at__gte=window.start)
                 .values_list("user_id").annotate(s=Sum("cost_micros")))
    spend = {user: s for user, s in spend.items() if s}
    expected_top = sorted(spend, key=lambda u: (-spend[u], u))[:10]
    assert [s.user_id for s in found.top] == expected_top
    assert all(s.spend_micros == spend[s.user_id] for s in found.top)
    expected_out = []
    for user in history:
        user.refresh_from_db()
        if user.pk not in spend or not hasattr(user, "wallet"):
            continue
        available = user.wallet.posted_micros - user.wallet.pending_micros
        if max(available, 0) / (spend[user.pk] / window.days) < RUN_OUT_DAYS:
            expected_out.append(user.pk)
    assert sorted(s.user_id for s in found.running_out) == sorted(expected_out)


def test_money_in_by_source_equals_the_ledger(make_user, price):
    user = make_user()
    card = wallet_credit(user=user, amount_micros=7_000_000, idempotency_key="card-1",
                         memo="card", kind=LedgerEntry.Kind.TOPUP)
    CheckoutTopUp.objects.create(user=user, amount_micros=7_000_000, currency="usd",
                                 status=CheckoutTopUp.Status.PAID, credited_entry=card)
    wallet_credit(user=user, amount_micros=3_000_000, idempotency_key="v-1", memo="voucher",
                  kind=LedgerEntry.Kind.VOUCHER)
    wallet_credit(user=user, amount_micros=1_500_000, idempotency_key="staff-1", memo="staff")
    wallet_credit(user=user, amount_micros=250_000, idempotency_key="staff-2", memo="by hand",
                  kind=LedgerEntry.Kind.TOPUP)
    wallet_credit(user=user, amount_micros=-500_000, idempotency_key="staff-3", memo="debit")
    found = money_in(window_for("24h", timezone.now()))
    assert found.by_source == {"card": 7_000_000, "voucher": 3_000_000, "staff": 1_750_000}
    positive = LedgerEntry.objects.filter(amount_micros__gt=0).exclude(kind="charge")
    assert found.total == positive.aggregate(s=Sum("amount_micros"))["s"]


def test_holds_pending_and_failing_deliveries_equal_direct_queries(make_user, price):
    user = make_user()
    wallet_credit(user=user, amount_micros=1_000_000, idempotency_key="h", memo="seed")
    for i, amount in enumerate((1000, 2500, 40_000)):
        hold_create(user=user, hold_id=f"hold-{i}", amount_micros=amount, price=price,
                    model="test-model")
    assert (holds_pending().count, holds_pending().total_micros) == (3, 43_500)
    now = timezone.now()
    for attempts, delivered in ((0, None), (2, None), (3, None), (1, now)):
        OutboxMessage.objects.create(kind="balance_webhook", user=user, created_at=now,
                                     next_attempt_at=now, attempts=attempts,
                                     delivered_at=delivered, last_error="HTTP 500")
    assert deliveries_failing().failing == 2


def test_the_worker_rollup_is_idempotent_and_run_by_its_task(history):
    before = sorted(WorkerRollup.objects.values_list(
        "period", "bucket_start", "worker", "model", "requests", "latency_hist"))
    worker_rollup_task()
    worker_rollup(since=timezone.now() - timedelta(days=41))
    after = sorted(WorkerRollup.objects.values_list(
        "period", "bucket_start", "worker", "model", "requests", "latency_hist"))
    assert after == before


def test_the_admin_index_is_the_dashboard_for_staff_only(client, history, staff, make_user):
    assert client.get("/admin/").status_code == 302  # not signed in
    client.force_login(make_user(email="nobody@example.com"))
    assert client.get("/admin/").status_code == 302  # signed in, not staff
    staff_sign_in(client, staff)
    Worker.objects.create(name="down", kind="openai", base_url="http://127.0.0.1:9",
                          healthy=False)
    response = client.get("/admin/?period=7d")
    assert response.status_code == 200
    page = response.content.decode()
    assert response.context["dash_window"].key == "7d"
    assert 'aria-current="page" class="active">Last 7 days' in page
    assert "<svg" in page
    assert "style=" not in page
    assert "<script>" not in page
    assert "unknown (" in page  # some records have no upstream cost: never shown as 0
    assert "down" in page
    assert "unhealthy" in page
    assert "Site administration" in page or "app-accounts" in page  # the app list stays
    assert client.get("/admin/?period=nonsense").context["dash_window"].key == "24h"


def test_the_dashboards_queries_do_not_grow_with_the_history(
        admin_client, make_user, price, django_assert_max_num_queries):
    users = [make_user() for _ in range(3)]
    _history(users, price, 50, seed=1)
    with django_assert_max_num_queries(20) as small:
        admin_client.get("/admin/?period=30d")
    _history(users + [make_user() for _ in range(20)], price, 800, seed=2)
    with django_assert_max_num_queries(len(small.captured_queries)):
        admin_client.get("/admin/?period=30d")
