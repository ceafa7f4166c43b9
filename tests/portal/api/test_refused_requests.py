"""Refused requests over the API: the caller's own only, with the usage list's filters."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_the_api_lists_only_the_callers_refusals(api, member, other, refuse, make_key):
    key = refuse(member, count=3, status=429, reason="rate_limit", endpoint="messages")
    refuse(other, count=9)

    body = api.get("/api/usage/refused").json()

    assert body["count"] == 1
    [group] = body["results"]
    assert (group["count"], group["status"], group["reason"], group["endpoint"],
            group["key_id"], group["key_prefix"], group["key_name"]) == (
        3, 429, "rate_limit", "messages", key.pk, key.prefix, "ci")
    assert api.get("/api/usage/refused", {"key": make_key(other).pk}).status_code == 404
    assert api.get("/api/usage/refused", {"endpoint": "chat"}).json()["count"] == 0
