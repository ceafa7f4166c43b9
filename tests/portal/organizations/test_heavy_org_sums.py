"""An organization's sums (per day, member, key and model over 30 days, this month's spend,
each key's spend ever) are read from the daily roll-ups for the days before today and from
the records for today: on a varied history, once the roll-up job has run, they are the
numbers the records themselves give (the reference below sums the records in Python)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing.models import UsageRecord
from billing.selectors.organization_usage import (
    organization_key_spend,
    organization_ledger_entries,
    organization_spend_month,
    organization_usage_by_key,
    organization_usage_by_member,
    organization_usage_by_model,
    organization_usage_daily,
)
from billing.selectors.usage import today_start
from billing.services.rollups import usage_rollup
from tests.billing.plans import plan_of, uses
from tests.portal.organizations.conftest import signed_in

pytestmark = pytest.mark.django_db

# Mid-month, late in the day: the 30 days span two months, today has records.
NOW = datetime(2026, 11, 17, 21, 30, tzinfo=UTC)
FIELDS = ("requests", "prompt_tokens", "completion_tokens", "cost_micros")


@pytest.fixture
def history(team, org_usage, price):
    """Three weeks and more of requests by every key (members', the service key, another
    organization's), two models, and the members' own personal requests, then rolled up."""
    UsageRecord.objects.update(created_at=NOW - timedelta(hours=3))  # the team's own
    sequence = itertools.count()
    made = []
    for days_ago in (0, 0, 1, 2, 5, 16, 17, 29, 30, 45):
        for n, who in enumerate(("member", "target", "admin", "owner", "service", "foreign")):
            record = org_usage(team.keys[who], cost_micros=1_000 * (days_ago + 1) + n,
                               model=("m-small", "m-large")[(days_ago + n) % 2],
                               prompt_tokens=10 + days_ago, completion_tokens=n)
            made.append((record.pk, NOW - timedelta(days=days_ago, hours=n * 3 % 20)))
        personal = UsageRecord.objects.create(
            request_id=f"personal-{next(sequence)}", user=team.users["member"], price=price,
            model="m-small", cost_micros=500, prompt_tokens=1, completion_tokens=1)
        made.append((personal.pk, NOW - timedelta(days=days_ago)))
    for pk, at in made:
        UsageRecord.objects.filter(pk=pk).update(created_at=at)
    usage_rollup(since=NOW - timedelta(days=60), until=NOW)
    return team


def _reference(organization, member, since, by) -> dict:
    """The sums straight from the records, as the pages computed them before roll-ups."""
    totals: dict = defaultdict(lambda: dict.fromkeys(FIELDS, 0))
    records = (UsageRecord.objects.filter(organization=organization, created_at__gte=since)
               .select_related("api_key", "user"))
    for record in records:
        service = bool(record.api_key and record.api_key.service)
        if member is not None and (record.user_id != member.pk or service):
            continue
        bucket = totals[by(record, service)]
        for field, value in (("requests", 1), ("prompt_tokens", record.prompt_tokens),
                             ("completion_tokens", record.completion_tokens),
                             ("cost_micros", record.cost_micros)):
            bucket[field] += value
    return dict(totals)


def _as_dict(rows, key) -> dict:
    return {key(row): {field: getattr(row, field) for field in FIELDS} for row in rows}


@pytest.mark.parametrize("who", [None, "member", "admin"])
def test_the_30_day_sums_equal_the_records_own(history, who):
    organization = history.organization
    member = history.users[who] if who else None
    since = today_start(NOW) - timedelta(days=29)

    daily = organization_usage_daily(organization=organization, member=member, now=NOW)
    expected_days = _reference(organization, member, since,
                               lambda r, s: r.created_at.astimezone(UTC).date())
    assert len(daily) == 30
    assert {row.day: {f: getattr(row, f) for f in FIELDS} for row in daily
            if row.requests} == expected_days
    assert sum(row.requests for row in daily) > 0

    by_model = organization_usage_by_model(organization=organization, member=member, now=NOW)
    assert _as_dict(by_model, lambda row: row.model) == _reference(
        organization, member, since, lambda r, s: r.model)

    by_member = organization_usage_by_member(organization=organization, member=member,
                                             now=NOW)
    assert _as_dict(by_member, lambda row: row.user_id) == _reference(
        organization, member, since, lambda r, s: None if s else r.user_id)

    by_key = organization_usage_by_key(organization=organization, member=member, now=NOW)
    assert _as_dict(by_key, lambda row: (row.api_key_id, row.owner_email, row.service)) == (
        _reference(organization, member, since,
                   lambda r, s: (r.api_key_id, r.user.email, s)))

    month = organization_spend_month(organization=organization, member=member, now=NOW)
    assert month == _reference(organization, member, today_start(NOW).replace(day=1),
                               lambda r, s: None).get(None, {}).get("cost_micros", 0)


def test_each_keys_spend_ever_equals_the_records_own(history):
    spend = organization_key_spend(organization=history.organization, now=NOW)

    expected = _reference(history.organization, None, datetime(2000, 1, 1, tzinfo=UTC),
                          lambda r, s: r.api_key_id)
    assert spend == {key_id: sums["cost_micros"] for key_id, sums in expected.items()}
    assert history.keys["foreign"].pk not in spend
    assert len(spend) == 5  # member, target, admin, owner, service


def test_past_days_are_read_from_the_roll_ups_and_only_today_from_the_records(history):
    """A record of a past day written after the roll-up ran (the job's lag) is not counted
    until the next run; today's are counted at once."""
    key = history.keys["member"]
    yesterday = UsageRecord.objects.filter(api_key=key).order_by("pk").first()
    before = organization_key_spend(organization=history.organization, now=NOW)
    late = UsageRecord.objects.create(
        request_id="late-1", user_id=key.user_id, api_key=key,
        organization_id=key.organization_id, model="m-small", price=yesterday.price,
        cost_micros=123)
    UsageRecord.objects.filter(pk=late.pk).update(created_at=NOW - timedelta(days=1))

    assert organization_key_spend(organization=history.organization, now=NOW) == before
    usage_rollup(since=NOW - timedelta(days=1), until=NOW)
    after = organization_key_spend(organization=history.organization, now=NOW)
    assert after[key.pk] == before[key.pk] + 123


def test_the_keys_page_shows_each_keys_spend_from_the_roll_ups(history):
    with CaptureQueriesContext(connection) as queries:
        response = signed_in(history.users["owner"]).get(
            reverse("portal:org_keys", args=[history.organization.pk]))

    assert response.status_code == 200
    spent = {key.pk: amount for key, amount, _ in response.context["rows"]}
    assert spent[history.keys["member"].pk] > 0
    # The records are read for today only (in the test, "today" is the real one: no
    # record), the rest from the roll-ups.
    reads = [q["sql"] for q in queries.captured_queries if "billing_usagerecord" in q["sql"]]
    assert reads
    assert all('"created_at" >=' in sql for sql in reads), reads


@pytest.mark.skipif("connection.vendor != 'postgresql'",
                    reason="the plan of PostgreSQL is what is checked")
def test_the_organization_ledger_page_reads_the_wallet_index_in_order(team):
    """Joined to the wallet, PostgreSQL sorted all of a busy organization's entries (and
    looked up each one's hold) to show 50; by the wallet's id it reads 50 in index order."""
    entries = organization_ledger_entries(organization=team.organization)

    plan = plan_of(lambda: list(entries[:50]))

    uses(plan, "billing_led_wallet__379ac1_idx")
    assert [entry.memo for entry in entries] == ["opening credit"]
