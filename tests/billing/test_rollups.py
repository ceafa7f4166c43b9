"""Roll-ups equal sums over the raw usage records."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from billing.models import UsageRecord, UsageRollup
from billing.services.rollups import usage_rollup, usage_rollup_recent
from billing.tasks import usage_rollup_task
from tests.staff import staff_sign_in

START = datetime(2026, 11, 20, 21, 0, tzinfo=UTC)


def _random_records(users, price, count: int, seed: int) -> list[UsageRecord]:
    rng = random.Random(seed)
    records = []
    for i in range(count):
        prompt = rng.randint(0, 5_000)
        records.append(UsageRecord(
            request_id=f"r{seed}-{i}", user=rng.choice(users), model=rng.choice(["a", "b"]),
            prompt_tokens=prompt, completion_tokens=rng.randint(0, 2_000),
            cached_tokens=rng.randint(0, prompt), cost_micros=rng.randint(0, 10_000),
            price=price, status=rng.choice(["ok", "ok", "ok", "cancelled", "upstream_error"]),
        ))
    UsageRecord.objects.bulk_create(records)
    # created_at is set on insert; spread the records over three days, by the minute.
    for record in records:
        UsageRecord.objects.filter(pk=record.pk).update(
            created_at=START + timedelta(minutes=rng.randint(0, 3 * 24 * 60 - 1)))
    return list(UsageRecord.objects.all())


def _expected(records: list[UsageRecord], period: str) -> dict[tuple, tuple]:
    sums: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
    for r in records:
        bucket = r.created_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        if period == "day":
            bucket = bucket.replace(hour=0)
        row = sums[(bucket, r.user_id, r.api_key_id, r.model)]
        for index, value in enumerate((1, int(r.status != "ok"), r.prompt_tokens,
                                       r.completion_tokens, r.cached_tokens, r.cost_micros)):
            row[index] += value
    return {key: tuple(value) for key, value in sums.items()}


def _actual(period: str) -> dict[tuple, tuple]:
    return {(r.bucket_start, r.user_id, r.api_key_id, r.model):
            (r.requests, r.failed_requests, r.prompt_tokens, r.completion_tokens,
             r.cached_tokens, r.cost_micros)
            for r in UsageRollup.objects.filter(period=period)}


def test_hourly_and_daily_rollups_equal_the_sums_of_random_usage(make_user, price):
    records = _random_records([make_user() for _ in range(3)], price, 400, seed=11)
    usage_rollup(since=START, until=START + timedelta(days=3))
    for period in ("hour", "day"):
        assert _actual(period) == _expected(records, period)


def test_running_it_again_or_over_part_of_the_window_changes_nothing(make_user, price):
    records = _random_records([make_user()], price, 150, seed=5)
    usage_rollup(since=START, until=START + timedelta(days=3))
    first = {p: _actual(p) for p in ("hour", "day")}
    usage_rollup(since=START + timedelta(hours=30), until=START + timedelta(hours=40))
    usage_rollup(since=START, until=START + timedelta(days=3))
    assert {p: _actual(p) for p in ("hour", "day")} == first
    assert first["day"] == _expected(records, "day")


def test_the_beat_task_rolls_up_the_recent_hours(user, price):
    UsageRecord.objects.create(request_id="now", user=user, model="m", prompt_tokens=3,
                               completion_tokens=4, cost_micros=11, price=price)
    assert usage_rollup_task.apply().get()["rows"] == 2  # its hour and its day
    assert UsageRollup.objects.get(period="day").cost_micros == 11


def test_staff_read_the_rollups_in_the_admin(client, make_user, price):
    staff = make_user(is_staff=True, is_superuser=True)
    _random_records([staff], price, 5, seed=2)
    usage_rollup(since=START, until=START + timedelta(days=3))
    staff_sign_in(client, staff)
    page = client.get("/admin/billing/usagerollup/?period__exact=day")
    assert page.status_code == 200
    assert "Cost (USD)" in page.content.decode()


def test_the_beat_task_catches_up_on_everything_since_its_last_run(user, price):
    def record(request_id: str, at: datetime, cost: int) -> None:
        usage = UsageRecord.objects.create(request_id=request_id, user=user, model="m",
                                           cost_micros=cost, price=price)
        UsageRecord.objects.filter(pk=usage.pk).update(created_at=at)

    record("evening", START, 5)
    usage_rollup_recent(now=START + timedelta(minutes=5))
    # Beat stops for the night; requests go on being served meanwhile.
    record("late", START + timedelta(minutes=50), 7)
    record("night", START + timedelta(hours=4), 11)

    usage_rollup_recent(now=START + timedelta(hours=12))

    hours = {r.bucket_start: r.cost_micros for r in UsageRollup.objects.filter(period="hour")}
    assert hours == {START: 12, START + timedelta(hours=4): 11}
    days = {r.bucket_start: r.cost_micros for r in UsageRollup.objects.filter(period="day")}
    assert days == {START.replace(hour=0): 12, START.replace(hour=0) + timedelta(days=1): 11}
