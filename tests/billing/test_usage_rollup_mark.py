"""The usage roll-ups' mark: the job moves it to the hour its roll-ups are complete before,
and every usage figure read from the roll-ups before it and the records after it equals
the figure summed from the records alone."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.services import api_key_create
from billing.models import UsageRecord, UsageRollup, UsageRollupMark
from billing.selectors import (
    api_key_spend_of,
    usage_by_model,
    usage_daily,
    usage_spend_summary,
)
from billing.selectors.organization_usage import (
    organization_key_spend,
    organization_spend_month,
    organization_usage_by_key,
    organization_usage_by_member,
    organization_usage_by_model,
    organization_usage_daily,
)
from billing.selectors.usage_sources import today_start
from billing.services import rollups
from billing.services.open_transactions import oldest_open_transaction
from billing.services.rollups import usage_rollup_recent
from organizations.services import organization_create, organization_key_create

START = datetime(2026, 10, 27, 22, 10, tzinfo=UTC)  # a month end comes up in the steps
MODELS = ("test-model", "other-model")
_ids = itertools.count(1)


class Team:
    """A user with two keys of their own, and an organization they own with a key."""

    def __init__(self, user, price) -> None:
        self.user, self.price = user, price
        self.keys = [api_key_create(user=user, name=f"k{n}").api_key for n in range(2)]
        self.organization = organization_create(name="Acme", owner=user)
        self.org_key = organization_key_create(organization=self.organization,
                                               actor=user).api_key
        self.records: list[UsageRecord] = []

    def record(self, at: datetime, *, key: int, model: str, cost: int) -> None:
        api_key = self.org_key if key == 2 else self.keys[key]
        usage = UsageRecord.objects.create(
            request_id=f"mark-{next(_ids)}", user=self.user, api_key=api_key,
            organization=self.organization if key == 2 else None, model=model,
            price=self.price, prompt_tokens=cost % 7 + 1, completion_tokens=cost % 5,
            cost_micros=cost, status=UsageRecord.Status.OK)
        # Stamped on insert; moved to the step's moment (records arrive in time order).
        UsageRecord.objects.filter(pk=usage.pk).update(created_at=at)
        usage.created_at = at
        self.records.append(usage)


def _sums(records) -> dict[str, int]:
    return {"requests": len(records),
            "prompt_tokens": sum(r.prompt_tokens for r in records),
            "completion_tokens": sum(r.completion_tokens for r in records),
            "cost_micros": sum(r.cost_micros for r in records)}


def _by(records, key) -> dict:
    groups = defaultdict(list)
    for record in records:
        groups[key(record)].append(record)
    return {name: _sums(group) for name, group in groups.items()}


def _figures(team: Team, now: datetime) -> dict:
    """Every figure the portal and the API show, from the selectors."""
    summary = usage_spend_summary(user=team.user, now=now)
    org = team.organization
    return {
        "today": (summary.today_micros, summary.requests_today),
        "month": summary.month_micros,
        "daily": [(d.day, d.requests, d.prompt_tokens, d.completion_tokens, d.cost_micros)
                  for d in usage_daily(user=team.user, now=now)],
        "models": {m.model: (m.requests, m.cost_micros)
                   for m in usage_by_model(user=team.user, now=now)},
        "keys": api_key_spend_of(user=team.user, now=now),
        "org daily": [(d.day, d.requests, d.cost_micros)
                      for d in organization_usage_daily(organization=org, now=now)],
        "org models": {m.model: (m.requests, m.completion_tokens)
                       for m in organization_usage_by_model(organization=org, now=now)},
        "org members": {m.user_id: m.cost_micros
                        for m in organization_usage_by_member(organization=org, now=now)},
        "org keys": {k.api_key_id: k.prompt_tokens
                     for k in organization_usage_by_key(organization=org, now=now)},
        "org month": organization_spend_month(organization=org, now=now),
        "org key spend": organization_key_spend(organization=org, now=now),
    }


def _truth(team: Team, now: datetime) -> dict:
    """The same figures summed from the records alone."""
    today = today_start(now)
    first = today - timedelta(days=29)
    mine = [r for r in team.records if r.organization_id is None and r.created_at <= now]
    team_records = [r for r in team.records if r.organization_id is not None
                    and r.created_at <= now]
    recent = [r for r in mine if r.created_at >= first]
    team_recent = [r for r in team_records if r.created_at >= first]
    daily = _by(recent, lambda r: r.created_at.date())
    team_daily = _by(team_recent, lambda r: r.created_at.date())
    days = [(first + timedelta(days=n)).date() for n in range(30)]
    zero = _sums([])
    today_sums = _sums([r for r in mine if r.created_at >= today])
    return {
        "today": (today_sums["cost_micros"], today_sums["requests"]),
        "month": _sums([r for r in mine if r.created_at >= today.replace(day=1)])[
            "cost_micros"],
        "daily": [(day, *daily.get(day, zero).values()) for day in days],
        "models": {m: (s["requests"], s["cost_micros"])
                   for m, s in _by(recent, lambda r: r.model).items()},
        "keys": {k: s["cost_micros"] for k, s in _by(mine, lambda r: r.api_key_id).items()
                 if s["cost_micros"]},
        "org daily": [(day, team_daily.get(day, zero)["requests"],
                       team_daily.get(day, zero)["cost_micros"]) for day in days],
        "org models": {m: (s["requests"], s["completion_tokens"])
                       for m, s in _by(team_recent, lambda r: r.model).items()},
        "org members": {u: s["cost_micros"]
                        for u, s in _by(team_recent, lambda r: r.user_id).items()},
        "org keys": {k: s["prompt_tokens"]
                     for k, s in _by(team_recent, lambda r: r.api_key_id).items()},
        "org month": _sums([r for r in team_records
                            if r.created_at >= today.replace(day=1)])["cost_micros"],
        "org key spend": {k: s["cost_micros"]
                          for k, s in _by(team_records, lambda r: r.api_key_id).items()
                          if s["cost_micros"]},
    }


record_step = st.tuples(st.just("record"), st.integers(0, 2), st.sampled_from(MODELS),
                        st.integers(1, 5_000))
step = st.tuples(st.integers(1, 600).map(lambda m: timedelta(minutes=m)),
                 st.one_of(record_step, st.just(("roll up",))))


@pytest.mark.django_db
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=30), end=st.integers(0, 90))
def test_figures_from_rollups_and_records_equal_the_records_alone(user, price, steps, end):
    # Examples share the test's transaction: each starts with no records, roll-ups or mark.
    UsageRecord.objects.all().delete()
    UsageRollup.objects.all().delete()
    UsageRollupMark.objects.all().delete()
    team = Team(user, price)
    now = START
    # Beat has run before (until then, days before today are read from their daily
    # roll-ups as they are: tests/billing/test_usage_selectors.py).
    usage_rollup_recent(now=now)
    for move, action in steps:
        now += move
        if action == ("roll up",):
            usage_rollup_recent(now=now)
        else:
            _, key, model, cost = action
            team.record(now, key=key, model=model, cost=cost)
    now += timedelta(minutes=end)  # read a while after the last step

    assert _figures(team, now) == _truth(team, now)


@pytest.mark.django_db
def test_the_mark_is_the_hour_before_the_lag_and_never_goes_back(user, price):
    Team(user, price).record(START, key=0, model="test-model", cost=10)
    usage_rollup_recent(now=datetime(2026, 11, 2, 10, 0, 30, tzinfo=UTC))
    # 10:00:30 less the minute's lag is 09:59:30: the hours before 09:00 are complete.
    assert UsageRollupMark.objects.get().complete_before == datetime(2026, 11, 2, 9,
                                                                     tzinfo=UTC)

    usage_rollup_recent(now=datetime(2026, 11, 2, 12, 40, tzinfo=UTC))
    assert UsageRollupMark.objects.get().complete_before == datetime(2026, 11, 2, 12,
                                                                     tzinfo=UTC)
    usage_rollup_recent(now=datetime(2026, 11, 2, 11, 0, tzinfo=UTC))  # a clock gone back
    assert UsageRollupMark.objects.get().complete_before == datetime(2026, 11, 2, 12,
                                                                     tzinfo=UTC)


@pytest.mark.django_db
def test_today_reads_only_the_records_after_the_mark(user, price):
    team = Team(user, price)
    now = datetime(2026, 11, 2, 18, 30, tzinfo=UTC)
    for minutes in range(0, 18 * 60, 45):  # every 45 minutes since midnight
        team.record(today_start(now) + timedelta(minutes=minutes), key=0, model="test-model",
                    cost=100)
    usage_rollup_recent(now=now)

    with CaptureQueriesContext(connection) as queries:
        summary = usage_spend_summary(user=user, now=now)

    assert summary.requests_today == 24
    reads = [q["sql"] for q in queries.captured_queries if "billing_usagerecord" in q["sql"]]
    assert reads
    assert all("2026-11-02T18:00:00" in sql or "2026-11-02 18:00:00" in sql
               for sql in reads), reads


@pytest.mark.django_db(transaction=True)
def test_an_open_transaction_holds_the_mark_back(user, price, monkeypatch):
    db = connection.settings_dict
    with psycopg.connect(dbname=db["NAME"], user=db["USER"], host=db["HOST"],
                         port=db["PORT"] or None) as other:
        started = other.execute("SELECT now()").fetchone()[0]  # its transaction's start
        assert oldest_open_transaction() == started
        other.rollback()
    assert oldest_open_transaction() is None or oldest_open_transaction() > started

    # The job takes the earlier of the lag and that start.
    three_hours_ago = datetime.now(UTC) - timedelta(hours=3)
    monkeypatch.setattr(rollups, "oldest_open_transaction", lambda: three_hours_ago)
    Team(user, price).record(three_hours_ago, key=0, model="test-model", cost=10)
    usage_rollup_recent()
    assert UsageRollupMark.objects.get().complete_before == three_hours_ago.replace(
        minute=0, second=0, microsecond=0)
