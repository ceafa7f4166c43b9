from __future__ import annotations

import pytest

from billing.errors import InvalidAlert
from billing.selectors import balance_alert_of
from billing.services.alerts import balance_alert_set


def test_a_user_sets_changes_and_removes_their_threshold(user, fake_dns):
    fake_dns.add("example.com", "93.184.215.14")
    alert = balance_alert_set(user=user, threshold_micros=5_000_000)
    assert (alert.threshold_micros, alert.email, alert.webhook_url) == (5_000_000, True, "")

    balance_alert_set(user=user, threshold_micros=1_000_000, email=False,
                      webhook_url="https://example.com/hook")
    alert = balance_alert_of(user=user)
    assert (alert.threshold_micros, alert.email) == (1_000_000, False)
    secret = alert.webhook_secret
    assert len(secret) > 30

    balance_alert_set(user=user, threshold_micros=2_000_000, email=False,
                      webhook_url="https://example.com/other")
    assert balance_alert_of(user=user).webhook_secret == secret  # receivers keep working

    assert balance_alert_set(user=user, threshold_micros=None) is None
    assert balance_alert_of(user=user) is None


@pytest.mark.parametrize(("threshold", "email", "url"), [
    (0, True, ""), (-5, True, ""), (100, True, "ftp://example.com"), (100, True, "nope"),
    (100, False, ""),
])
def test_bad_alert_settings_are_refused(user, threshold, email, url):
    with pytest.raises(InvalidAlert):
        balance_alert_set(user=user, threshold_micros=threshold, email=email, webhook_url=url)
    assert balance_alert_of(user=user) is None
