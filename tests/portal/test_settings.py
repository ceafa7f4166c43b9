from __future__ import annotations

import pytest
from django.urls import reverse

from billing.models import BalanceAlert

pytestmark = pytest.mark.django_db


def test_setting_changing_and_removing_the_low_balance_alert(member_client, member, fake_dns):
    fake_dns.add("hooks.example.com", "93.184.215.14")
    response = member_client.post(reverse("portal:settings"), {
        "threshold_usd": "2.50", "email": "on", "webhook_url": ""})
    assert response["Location"] == reverse("portal:settings")
    alert = BalanceAlert.objects.get(user=member)
    assert alert.threshold_micros == 2_500_000
    assert alert.email

    member_client.post(reverse("portal:settings"), {
        "threshold_usd": "1", "webhook_url": "https://hooks.example.com/low"})
    alert.refresh_from_db()
    assert (alert.threshold_micros, alert.email) == (1_000_000, False)
    page = member_client.get(reverse("portal:settings")).content.decode()
    assert alert.webhook_secret in page  # the user needs it to check signatures
    assert 'value="1"' in page

    response = member_client.post(reverse("portal:settings"), {"threshold_usd": ""},
                                  follow=True)
    assert "Low-balance alert turned off." in response.content.decode()
    assert not BalanceAlert.objects.filter(user=member).exists()


@pytest.mark.parametrize(("data", "message"), [
    ({"threshold_usd": "0", "email": "on"}, "more than zero"),
    ({"threshold_usd": "abc", "email": "on"}, "is not an amount of USD"),
    ({"threshold_usd": "5"}, "Choose email, a webhook, or both"),
    ({"threshold_usd": "5", "webhook_url": "not a url"}, "Enter a valid URL"),
    ({"threshold_usd": "5", "webhook_url": "http://169.254.169.254/latest/meta-data/"},
     "webhooks go only to public internet addresses"),
    ({"threshold_usd": "5", "webhook_url": "http://localhost:6379/"},
     "localhost does not resolve, or resolves to a private, loopback or reserved address"),
])
def test_bad_alert_settings_are_explained_and_not_saved(member_client, member, data, message):
    response = member_client.post(reverse("portal:settings"), data)

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not BalanceAlert.objects.filter(user=member).exists()
