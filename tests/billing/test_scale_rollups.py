"""The roll-ups summed by the database (hours from records, days from hours, a day at a
time) equal, row for row, those the ORM builds in Python from the records: for a rebuild of
history, and for beat's incremental runs as requests keep arriving."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection, transaction

from accounts.services import api_key_create
from billing.models import UsageOwnerRollup, UsageRecord, UsageRollup, Wallet
from billing.services import price_set, rollups
from billing.services.rollups import usage_rollup, usage_rollup_in_python, usage_rollup_recent
from organizations.models import Role
from organizations.services import (
    invitation_accept,
    invitation_create,
    organization_create,
    organization_key_create,
)
from proxy.rollup_service import worker_rollup, worker_rollup_in_python, worker_rollup_recent
from proxy.rollups import BOUNDS_MS, WorkerRollup

pytestmark = pytest.mark.skipif("connection.vendor != 'postgresql'",
                                reason="the set-based roll-ups are PostgreSQL's")

START = datetime(2026, 11, 20, 21, 0, tzinfo=UTC)
END = START + timedelta(days=3)
MIDNIGHT = datetime(2026, 11, 21, tzinfo=UTC)
TICK = timedelta(microseconds=1)
# Records right on and right beside the edges of hours and of UTC days.
EDGES = [MIDNIGHT - TICK, MIDNIGHT, MIDNIGHT + TICK, MIDNIGHT + timedelta(hours=1) - TICK,
         MIDNIGHT + timedelta(hours=1), MIDNIGHT + timedelta(days=1) - TICK,
         MIDNIGHT + timedelta(days=1), START, START + timedelta(minutes=59, seconds=59)]


@pytest.fixture
def payers(make_user) -> list[dict[str, Any]]:
    """Who pays, with which key: personal with and without a key, an organization's owner
    and member with their own keys, and its service key."""
    alone, keyed, owner, member = (make_user() for _ in range(4))
    organization = organization_create(name="Acme", owner=owner)
    _, token = invitation_create(organization=organization, actor=owner, email=member.email,
                                 role=Role.MEMBER)
    invitation_accept(token=token, user=member)
    org_id = Wallet.objects.get(organization=organization).organization_id
    return [
        {"user_id": alone.pk, "organization_id": None, "api_key_id": None},
        {"user_id": keyed.pk, "organization_id": None,
         "api_key_id": api_key_create(user=keyed).api_key.pk},
        {"user_id": owner.pk, "organization_id": org_id,
         "api_key_id": organization_key_create(organization=organization,
                                               actor=owner).api_key.pk},
        {"user_id": member.pk, "organization_id": org_id,
         "api_key_id": organization_key_create(organization=organization,
                                               actor=member).api_key.pk},
        {"user_id": owner.pk, "organization_id": org_id,
         "api_key_id": organization_key_create(organization=organization, actor=owner,
                                               service=True).api_key.pk},
    ]


def _records(payers: list[dict[str, Any]], moments: list[datetime], seed: int,
             ) -> list[UsageRecord]:
    rng = random.Random(seed)
    price = price_set(model="m-a", input_usd_per_mtok="1", output_usd_per_mtok="2")
    records = []
    for i in range(len(moments)):
        prompt = rng.randint(0, 4_000)
        cost = rng.randint(0, 9_000)
        records.append(UsageRecord(
            request_id=f"s{seed}-{i}", **rng.choice(payers),
            model=rng.choice(["m-a", "m-b", "m-c"]), worker=rng.choice(["w1", "w2", ""]),
            prompt_tokens=prompt, completion_tokens=rng.randint(0, 3_000),
            cached_tokens=rng.randint(0, prompt), cost_micros=cost, price=price,
            upstream_cost_micros=rng.choice([None, 0, cost // 2, cost]),
            status=rng.choice(["ok", "ok", "ok", "cancelled", "upstream_error", "expired"]),
            latency_ms=rng.choice([None, 0, 9, 10, 12, *BOUNDS_MS[-2:], 5_000_000,
                                   rng.randint(0, 90_000)]),
            ttft_ms=rng.choice([None, None, 10, rng.randint(0, 20_000)]),
        ))
    UsageRecord.objects.bulk_create(records)
    # created_at is stamped on insert; place each record at its moment.
    for record, moment in zip(records, moments, strict=True):
        record.created_at = moment
    UsageRecord.objects.bulk_update(records, ["created_at"], batch_size=500)
    return records


def _moments(rng: random.Random, count: int, start: datetime, end: datetime) -> list[datetime]:
    span = int((end - start).total_seconds() * 1_000_000)
    return [start + timedelta(microseconds=rng.randrange(span)) for _ in range(count)]


def _usage_rows() -> dict[tuple, tuple]:
    return {(r.period, r.bucket_start, r.user_id, r.organization_id, r.api_key_id, r.model):
            (r.requests, r.failed_requests, r.prompt_tokens, r.completion_tokens,
             r.cached_tokens, r.cost_micros, r.upstream_cost_micros, r.unknown_cost_requests,
             r.unknown_cost_charged_micros)
            for r in UsageRollup.objects.all()}


def _owners_agree() -> None:
    """The owners' roll-ups are the usage roll-ups summed per owner, bucket by bucket."""
    summed: dict[tuple, list[int]] = {}
    for r in UsageRollup.objects.all():
        row = summed.setdefault((r.period, r.bucket_start, r.user_id, r.organization_id),
                                [0, 0])
        row[0] += r.requests
        row[1] += r.cost_micros
    owners = {(o.period, o.bucket_start, o.user_id, o.organization_id):
              [o.requests, o.cost_micros] for o in UsageOwnerRollup.objects.all()}
    assert UsageOwnerRollup.objects.count() == len(owners)  # one row per owner and bucket
    assert owners == summed


def _worker_rows() -> dict[tuple, tuple]:
    return {(r.period, r.bucket_start, r.worker, r.model):
            (r.requests, r.failed_requests, r.prompt_tokens, r.completion_tokens,
             r.cost_micros, r.known_cost_micros, r.upstream_cost_micros,
             r.unknown_cost_requests, r.latency_hist, r.ttft_hist)
            for r in WorkerRollup.objects.all()}


def _rebuilt_in_python(rollup: Callable[..., int], rows: Callable[[], dict], *,
                       since: datetime, until: datetime) -> dict[tuple, tuple]:
    """What the ORM path makes of every record from ``since`` on, from empty tables; the
    tables are left as they were."""
    with transaction.atomic():
        UsageRollup.objects.all().delete()
        WorkerRollup.objects.all().delete()
        rollup(since=since, until=until)
        expected = rows()
        transaction.set_rollback(True)
    return expected


def test_a_rebuild_of_history_equals_the_orm_row_for_row(payers):
    rng = random.Random(3)
    _records(payers, _moments(rng, 700, START, END) + EDGES, seed=3)
    assert usage_rollup_in_python(since=START, until=END) > 0
    assert worker_rollup_in_python(since=START, until=END) > 0
    expected_usage, expected_workers = _usage_rows(), _worker_rows()
    UsageRollup.objects.all().delete()
    WorkerRollup.objects.all().delete()

    written = usage_rollup(since=START, until=END)

    assert written == len(expected_usage)
    assert _usage_rows() == expected_usage
    _owners_agree()
    assert worker_rollup(since=START, until=END) == len(expected_workers)
    assert _worker_rows() == expected_workers
    # Every record counted once per period, on the UTC hour and day it was written in.
    for period in ("hour", "day"):
        assert sum(row[0] for key, row in _usage_rows().items() if key[0] == period) == 709
    edge_day = UsageRollup.objects.filter(period="day", bucket_start=MIDNIGHT)
    assert sum(edge_day.values_list("requests", flat=True)) == sum(
        1 for r in UsageRecord.objects.all() if MIDNIGHT <= r.created_at < MIDNIGHT
        + timedelta(days=1))


def test_beats_incremental_runs_equal_the_orm_rebuilt_from_the_records(payers):
    rng = random.Random(7)
    moments = sorted(_moments(rng, 600, START, END) + EDGES)
    now = START
    seed = 0
    while now < END:
        # Requests served since the last run, then the run: every 50 minutes to 7 hours
        # (beat stopped a while), so runs cross hours and midnights at every offset.
        later = min(END, now + timedelta(minutes=rng.choice([50, 65, 120, 300, 420])))
        arrived = [moment for moment in moments if now <= moment < later]
        if arrived:
            seed += 1
            _records(payers, arrived, seed=seed)
        now = later
        usage_rollup_recent(now=now)
        worker_rollup_recent(now=now)
        assert _usage_rows() == _rebuilt_in_python(usage_rollup_in_python, _usage_rows,
                                                   since=START, until=now)
        _owners_agree()
        assert _worker_rows() == _rebuilt_in_python(worker_rollup_in_python, _worker_rows,
                                                    since=START, until=now)
    assert sum(r.requests for r in UsageRollup.objects.filter(period="day")) == len(moments)


def test_a_rerun_over_part_of_a_day_changes_nothing(payers):
    rng = random.Random(5)
    _records(payers, _moments(rng, 300, START, END) + EDGES, seed=5)
    usage_rollup(since=START, until=END)
    worker_rollup(since=START, until=END)
    first = _usage_rows(), _worker_rows()
    usage_rollup(since=MIDNIGHT + timedelta(hours=5), until=MIDNIGHT + timedelta(hours=7))
    worker_rollup(since=MIDNIGHT + timedelta(hours=5), until=MIDNIGHT + timedelta(hours=7))
    usage_rollup_recent(now=END)
    worker_rollup_recent(now=END)
    assert (_usage_rows(), _worker_rows()) == first


def test_an_incremental_run_reads_only_the_hours_it_recomputes(payers):
    """A day already rolled up keeps hours the run did not recompute: a record slipped into
    one of them behind the job's back (which the request path never does: it stamps a
    record when it writes it) stays out of both the hour and the day. The day is its
    hours' sum, not a re-read of the day's records."""
    rng = random.Random(9)
    _records(payers, _moments(rng, 100, MIDNIGHT, MIDNIGHT + timedelta(hours=20)), seed=9)
    usage_rollup(since=MIDNIGHT, until=MIDNIGHT + timedelta(hours=20))
    _records(payers, [MIDNIGHT + timedelta(hours=2)], seed=10)  # long past: not recomputed
    _records(payers, [MIDNIGHT + timedelta(hours=20, minutes=30)], seed=11)  # in the window

    usage_rollup_recent(now=MIDNIGHT + timedelta(hours=21))

    def requests(period: str, start: datetime) -> int:
        rows = UsageRollup.objects.filter(period=period, bucket_start=start)
        return sum(rows.values_list("requests", flat=True))

    assert requests("day", MIDNIGHT) == 101
    assert requests("hour", MIDNIGHT + timedelta(hours=20)) == 1
    # A rebuild of the day reads its records again, and counts the straggler.
    usage_rollup(since=MIDNIGHT, until=MIDNIGHT + timedelta(hours=21))
    assert requests("day", MIDNIGHT) == 102


def test_a_rerun_writes_only_the_buckets_that_differ_and_repairs_them(payers):
    rng = random.Random(6)
    _records(payers, _moments(rng, 300, START, END) + EDGES, seed=6)
    assert usage_rollup(since=START, until=END) > 0
    expected = _usage_rows()
    untouched = set(UsageRollup.objects.values_list("pk", flat=True))
    # Damage no run of the job makes: a bucket altered, one invented.
    altered = UsageRollup.objects.filter(period="hour").order_by("pk").first()
    UsageRollup.objects.filter(pk=altered.pk).update(requests=altered.requests + 1)
    invented = UsageRollup.objects.create(period="hour", bucket_start=MIDNIGHT,
                                          user_id=payers[0]["user_id"], model="none")

    written = usage_rollup(since=START, until=END)

    assert written == 1  # the altered hour, written again; the rest was only read
    assert _usage_rows() == expected
    assert UsageRollup.objects.count() == len(expected)
    remaining = set(UsageRollup.objects.values_list("pk", flat=True))
    assert altered.pk not in remaining
    assert invented.pk not in remaining
    assert len(untouched - remaining) == 1


@pytest.mark.django_db(transaction=True)
def test_a_rebuild_sums_its_days_in_parallel_and_equals_the_orm(payers, monkeypatch):
    summed_on = []
    one_day = rollups._rollup_day_on_own_connection
    monkeypatch.setattr(rollups, "_rollup_day_on_own_connection",
                        lambda window: summed_on.append(threading.get_ident()) or one_day(window))
    rng = random.Random(5)
    _records(payers, _moments(rng, 600, START, END) + EDGES, seed=5)
    usage_rollup_in_python(since=START, until=END)
    expected = _usage_rows()
    UsageRollup.objects.all().delete()
    connections_before = _sessions()

    # Not inside a transaction: its four days go to the database two at a time.
    written = usage_rollup(since=START, until=END)

    assert len(summed_on) == 4
    assert threading.get_ident() not in summed_on
    assert written == len(expected)
    assert _usage_rows() == expected
    _owners_agree()
    assert _sessions() == connections_before  # the workers' connections are closed
    assert usage_rollup(since=START, until=END) == 0  # again: nothing changed


def _sessions() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                       "current_database()")
        return cursor.fetchone()[0]
