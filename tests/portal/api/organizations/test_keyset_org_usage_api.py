"""/api/orgs/{id}/usage pages by cursor as /api/usage does (tests/portal/api/
test_keyset_usage_api.py covers the pagination itself)."""

from __future__ import annotations

import pytest

from tests.portal.api.conftest import session_client
from tests.portal.api.test_keyset_usage_api import _walk


@pytest.mark.django_db
def test_an_organizations_usage_walks_by_cursor_too(team):
    client = session_client(team.users["admin"])
    path = f"/api/orgs/{team.organization.pk}/usage"
    everything = client.get(path).json()["results"]

    seen, bodies = _walk(client, path, {"page_size": 1})

    assert seen == [row["request_id"] for row in everything]
    assert len(bodies) == len(everything) >= 3
    bad = client.get(path, {"cursor": "nope"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_cursor")
