"""Usage records and holds are partitioned by month on PostgreSQL (migration 0021); partition
maintenance keeps the months ahead and empties DEFAULT; retention drops whole old months,
only when roll-ups cover them and none of their holds is pending."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management.base import CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from billing.models import Hold, LedgerEntry, UsageRecord, UsageRollup
from billing.services import UsageReport, hold_create, hold_settle, wallet_credit
from billing.services.partitions import add_months, month_start, partitions_ensure
from billing.services.retention import RetentionRefused, retention_apply
from billing.services.rollups import usage_rollup
from billing.tasks import partitions_maintain_task
from tests.router_admin.cli import router

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql",
                                reason="partitions exist on PostgreSQL only")

migration_0021 = importlib.import_module("billing.migrations.0021_partition_usage_and_holds")


def _this_month() -> datetime:
    return month_start(timezone.now())


def _partition_of(table: str, key: str, value: object) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT tableoid::regclass::text FROM {table} "
                       f"WHERE {key} = %s", [value])
        return cursor.fetchone()[0]


def _partitions(table: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT c.relname FROM pg_inherits AS i "
                       "JOIN pg_class AS c ON c.oid = i.inhrelid "
                       "WHERE i.inhparent = %s::regclass ORDER BY 1", [table])
        return [name for (name,) in cursor.fetchall()]


def _usage(user, price, request_id: str, at: datetime, cost: int = 300) -> UsageRecord:
    record = UsageRecord.objects.create(request_id=request_id, user=user, model=price.model,
                                        price=price, prompt_tokens=100, completion_tokens=100,
                                        cost_micros=cost)
    # auto_now_add stamps the insert; moving the row to another month moves its partition.
    UsageRecord.objects.filter(pk=record.pk).update(created_at=at)
    return record


def _hold(user, price, hold_id: str, at: datetime) -> Hold:
    hold = hold_create(user=user, hold_id=hold_id, amount_micros=1_000, price=price,
                       model=price.model)
    Hold.objects.filter(pk=hold_id).update(created_at=at)
    return hold


@pytest.fixture
def funded(user):
    wallet_credit(user=user, amount_micros=1_000_000, idempotency_key="fund", memo="")
    return user


def test_after_migrating_both_tables_are_partitioned_by_month_with_a_default(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT partrelid::regclass::text, partstrat FROM pg_partitioned_table "
                       "ORDER BY 1")
        assert cursor.fetchall() == [("billing_hold", "r"), ("billing_usagerecord", "r")]
        # The month the migration ran in, not this one: the test database is migrated when
        # the run starts, and a run that crosses a month's turn before this test (or a
        # database kept with --reuse-db) has no partition yet for this month's third after.
        cursor.execute("SELECT applied FROM django_migrations WHERE app = 'billing' "
                       "AND name = '0021_partition_usage_and_holds'")
        month = month_start(cursor.fetchone()[0])
    for table in ("billing_hold", "billing_usagerecord"):
        names = _partitions(table)
        assert f"{table}_default" in names
        # That month and the three after it, at least.
        for ahead in range(4):
            assert f"{table}_p{add_months(month, ahead):%Y_%m}" in names


def test_the_ledger_no_longer_has_a_foreign_key_to_holds(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
                       "AND confrelid IN ('billing_hold'::regclass, "
                       "'billing_usagerecord'::regclass)")
        assert cursor.fetchone()[0] == 0


def test_rows_land_in_their_months_partition_and_far_dates_in_default(funded, price):
    month = _this_month()
    _usage(funded, price, "now", month + timedelta(days=2))
    _usage(funded, price, "next", add_months(month, 1) + timedelta(hours=1))
    _usage(funded, price, "past", month - timedelta(days=5 * 365))
    _usage(funded, price, "future", add_months(month, 60))
    assert _partition_of("billing_usagerecord", "request_id", "now") == \
        f"billing_usagerecord_p{month:%Y_%m}"
    assert _partition_of("billing_usagerecord", "request_id", "next") == \
        f"billing_usagerecord_p{add_months(month, 1):%Y_%m}"
    assert _partition_of("billing_usagerecord", "request_id", "past") == \
        "billing_usagerecord_default"
    assert _partition_of("billing_usagerecord", "request_id", "future") == \
        "billing_usagerecord_default"
    _hold(funded, price, "h-now", month + timedelta(days=1))
    _hold(funded, price, "h-old", month - timedelta(days=4 * 365))
    assert _partition_of("billing_hold", "id", "h-now") == f"billing_hold_p{month:%Y_%m}"
    assert _partition_of("billing_hold", "id", "h-old") == "billing_hold_default"
    # Django sees one table: every row, by its primary key.
    assert UsageRecord.objects.count() == 4
    assert Hold.objects.get(pk="h-old").created_at.year == (month - timedelta(
        days=4 * 365)).year


def test_maintenance_creates_the_months_ahead_once(db):
    later = add_months(_this_month(), 8)
    created = partitions_ensure(now=later)
    for table in ("billing_usagerecord", "billing_hold"):
        for ahead in range(4):
            assert f"{table}_p{add_months(later, ahead):%Y_%m}" in _partitions(table)
    assert f"billing_hold_p{add_months(later, 3):%Y_%m}" in created
    assert partitions_ensure(now=later) == []


def test_maintenance_moves_rows_waiting_in_default_into_their_new_month(funded, price):
    far = add_months(_this_month(), 30) + timedelta(days=3)
    _usage(funded, price, "early-bird", far)
    _hold(funded, price, "h-early", far)
    assert _partition_of("billing_usagerecord", "request_id", "early-bird").endswith("default")
    created = partitions_ensure()
    assert f"billing_usagerecord_p{far:%Y_%m}" in created
    assert _partition_of("billing_usagerecord", "request_id", "early-bird") == \
        f"billing_usagerecord_p{far:%Y_%m}"
    assert _partition_of("billing_hold", "id", "h-early") == f"billing_hold_p{far:%Y_%m}"
    # The moved partition got the parent's indexes and checks: a second record of that
    # month with a negative cost is still refused.
    assert UsageRecord.objects.filter(request_id="early-bird").count() == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_indexes WHERE tablename = %s",
                       [f"billing_usagerecord_p{far:%Y_%m}"])
        assert cursor.fetchone()[0] >= 5


def test_the_beat_task_and_the_cli_run_maintenance(db):
    assert partitions_maintain_task() == {"created": []}
    lines = "\n".join(router("partitions"))
    assert "Every partition needed exists." in lines
    assert "billing_hold:" in lines


@pytest.fixture
def old_month(funded, price):
    """Two years ago: a month with two usage records and a pending hold, and a recent month
    (three months ago) with one record, each moved into its own partition."""
    old = add_months(_this_month(), -24)
    recent = add_months(_this_month(), -3)
    _usage(funded, price, "old-1", old + timedelta(days=3), cost=300)
    _usage(funded, price, "old-2", old + timedelta(days=20), cost=500)
    _usage(funded, price, "recent", recent + timedelta(days=1))
    _hold(funded, price, "h-old", old + timedelta(days=3))
    _hold(funded, price, "h-recent", recent + timedelta(days=3))
    partitions_ensure()
    return old


def test_retention_refuses_a_month_its_roll_ups_do_not_cover(old_month):
    with pytest.raises(RetentionRefused, match=f"{old_month:%Y-%m} has 2 usage records"):
        retention_apply(months=12)
    assert UsageRecord.objects.filter(request_id__startswith="old").count() == 2


def test_retention_refuses_a_month_with_a_pending_hold(old_month):
    usage_rollup(since=old_month, until=add_months(old_month, 1))
    with pytest.raises(RetentionRefused, match="1 pending hold"):
        retention_apply(months=12)
    assert Hold.objects.filter(pk="h-old").exists()


def test_retention_drops_only_the_covered_months_older_than_the_policy(old_month, price):
    usage_rollup(since=old_month, until=add_months(old_month, 1))
    hold_settle(hold_id="h-old", usage=UsageReport(prompt_tokens=10, completion_tokens=10))
    ledger_before = list(LedgerEntry.objects.values_list("pk", "amount_micros"))
    rollups_before = UsageRollup.objects.count()
    old_partitions = {f"billing_usagerecord_p{old_month:%Y_%m}",
                      f"billing_hold_p{old_month:%Y_%m}"}

    dry = retention_apply(months=12, dry_run=True)
    assert set(dry.dropped) == old_partitions
    assert UsageRecord.objects.filter(request_id__startswith="old").count() == 2

    result = retention_apply(months=12)
    assert set(result.dropped) == old_partitions
    for table in ("billing_usagerecord", "billing_hold"):
        assert f"{table}_p{old_month:%Y_%m}" not in _partitions(table)
    assert not UsageRecord.objects.filter(request_id__startswith="old").exists()
    assert not Hold.objects.filter(pk="h-old").exists()
    # The recent month, the ledger (the old hold's charge included) and roll-ups stay.
    assert UsageRecord.objects.filter(request_id="recent").exists()
    assert Hold.objects.filter(pk="h-recent").exists()
    assert list(LedgerEntry.objects.values_list("pk", "amount_micros")) == ledger_before
    assert LedgerEntry.objects.filter(hold_id="h-old", kind="charge").exists()
    assert UsageRollup.objects.count() == rollups_before
    assert retention_apply(months=12).dropped == []


def test_retention_without_a_policy_is_refused_and_the_cli_says_why(old_month, settings):
    settings.ROUTER_USAGE_RETENTION_MONTHS = 0
    with pytest.raises(RetentionRefused, match="keep everything"):
        retention_apply()
    with pytest.raises(CommandError, match="roll-ups"):
        router("retention", "--months", "12", "--dry-run")


def test_the_cli_dry_run_names_what_it_would_drop(old_month):
    usage_rollup(since=old_month, until=add_months(old_month, 1))
    hold_settle(hold_id="h-old", usage=UsageReport(prompt_tokens=10, completion_tokens=10))
    lines = router("retention", "--months", "12", "--dry-run")
    assert f"Would drop billing_usagerecord_p{old_month:%Y_%m}." in lines
    assert UsageRecord.objects.filter(request_id__startswith="old").count() == 2


@pytest.mark.django_db(transaction=True)
def test_migrating_from_0020_moves_every_row_into_the_partitioned_tables(make_user, price):
    user = make_user()
    wallet_credit(user=user, amount_micros=1_000_000, idempotency_key="mig", memo="")
    before = {table: set(_partitions(table)) for table in ("billing_hold", "billing_usagerecord")}
    executor = MigrationExecutor(connection)
    try:
        executor.migrate([("billing", "0020_scale_indexes")])
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_partitioned_table")
            assert cursor.fetchone()[0] == 0
        old = datetime(2021, 3, 14, 12, tzinfo=UTC)
        for i in range(30):
            hold_create(user=user, hold_id=f"m-{i}", amount_micros=1_000, price=price,
                        model=price.model)
            hold_settle(hold_id=f"m-{i}", usage=UsageReport(prompt_tokens=10,
                                                            completion_tokens=10))
        # A third of them from an old month: the migration starts its partitions there.
        Hold.objects.filter(pk__in=[f"m-{i}" for i in range(10)]).update(created_at=old)
        UsageRecord.objects.filter(request_id__in=[f"m-{i}" for i in range(10)]).update(
            created_at=old)
        ids_before = sorted(UsageRecord.objects.values_list("pk", flat=True))
        executor.loader.build_graph()
        executor.migrate([("billing", "0021_partition_usage_and_holds")])
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_partitioned_table")
            assert cursor.fetchone()[0] == 2
        assert Hold.objects.count() == 30
        assert sorted(UsageRecord.objects.values_list("pk", flat=True)) == ids_before
        assert _partition_of("billing_usagerecord", "request_id", "m-0") == \
            "billing_usagerecord_p2021_03"
        assert "billing_hold_p2021_07" in _partitions("billing_hold")  # every month since
        # The identity carries on after the copied ids.
        hold_create(user=user, hold_id="m-after", amount_micros=1_000, price=price,
                    model=price.model)
        after = hold_settle(hold_id="m-after", usage=UsageReport(prompt_tokens=10,
                                                                  completion_tokens=10))
        assert after.usage_record.pk > max(ids_before)
        assert LedgerEntry.objects.filter(kind="charge").count() == 31
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
        # The months since 2021 go again: every table is truncated after each transactional
        # test, and 140 more partitions (with their indexes) made each of those truncations
        # twice as slow for the rest of the suite.
        with connection.cursor() as cursor:
            for table, names in before.items():
                for name in set(_partitions(table)) - names:
                    cursor.execute(f'DROP TABLE "{name}"')


def test_the_migration_appends_created_at_to_unique_index_definitions():
    assert migration_0021._with_created_at(
        "CREATE UNIQUE INDEX x ON public.t USING btree (lower((a)::text), b) WHERE (c > 0)"
    ) == "CREATE UNIQUE INDEX x ON public.t USING btree (lower((a)::text), b, created_at) " \
        "WHERE (c > 0)"
