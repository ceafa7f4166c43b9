"""The per-user rate limit of /api."""

from __future__ import annotations

from tests.portal.api.conftest import session_client, token_client


def test_past_the_rate_a_user_gets_429_with_retry_after(member, settings):
    settings.ROUTER_API_RATE_PER_MINUTE = 3
    by_session, by_token = session_client(member), token_client(member)

    statuses = [client.get("/api/balance").status_code
                for client in (by_session, by_token, by_session, by_token)]

    # Sessions and tokens of one user share one budget: more tokens buy no more requests.
    assert statuses == [200, 200, 200, 429]
    refused = by_session.get("/api/keys")
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused.json()["error"]["type"] == "rate_limit_error"


def test_one_users_requests_do_not_use_up_anothers(member, other, settings):
    settings.ROUTER_API_RATE_PER_MINUTE = 1
    session_client(member).get("/api/balance")

    assert session_client(other).get("/api/balance").status_code == 200
