"""Refused requests (402, 429) in the usage list: the user's own only, never charged,
narrowed by the same filters as the requests."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

pytestmark = pytest.mark.django_db


def test_the_usage_page_shows_the_latest_refusals_and_their_total(member_client, member,
                                                                  refuse, other):
    key = refuse(member, count=7, message="You exceeded your current quota: add funds.")
    refuse(member, key=key, count=2, status=429, reason="rate_limit", message="Rate limit")
    refuse(other, count=50)  # another user's: never shown

    response = member_client.get(reverse("portal:usage"))

    page = response.content.decode()
    assert 'data-testid="refused-latest"' in page
    assert "9 refused</a> (not charged)" in page
    assert [g.count for g in response.context["refused_latest"]] == [2, 7]  # newest first
    assert "You exceeded your current quota: add funds." in page
    assert "402 Insufficient balance" in page
    assert "429 Rate limit" in page
    assert "sk-br-" in page
    assert "(ci)" in page


def test_the_refused_filter_lists_the_groups_with_the_other_filters_applied(
    member_client, member, refuse, make_key
):
    ci, batch = make_key(member, name="ci"), make_key(member, name="batch")
    # "Today" is the day these refusals were counted in, read once: read again for the
    # filter, a UTC midnight passed in between left them on the day before.
    now = timezone.now()
    refuse(member, key=ci, count=3, model="m1", at=now)
    refuse(member, key=batch, count=4, model="m2", at=now)
    refuse(member, key=ci, count=5, model="m1", at=now - timedelta(days=3))

    url = reverse("portal:usage")
    every = member_client.get(url, {"status": "refused"})
    by_key = member_client.get(url, {"status": "refused", "key": batch.pk})
    today = member_client.get(url, {"status": "refused", "since": now.date().isoformat()})

    # Newest minute first; in one minute, the group counted last first.
    assert [g.count for g in every.context["page"].object_list] == [4, 3, 5]
    assert [g.count for g in by_key.context["page"].object_list] == [4]
    assert sorted(g.count for g in today.context["page"].object_list) == [3, 4]
    assert 'data-testid="refused-table"' in every.content.decode()
    assert 'data-testid="csv-link"' not in every.content.decode()


def test_without_refusals_the_page_says_nothing_of_them(member_client):
    page = member_client.get(reverse("portal:usage")).content.decode()
    assert "refused-latest" not in page
    assert "refused</a>" not in page
