from __future__ import annotations

import pytest
from django.urls import reverse

from billing.services import price_set
from billing.services.alerts import balance_alert_set
from tests.portal.conftest import money_html

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("name", ["portal:dashboard", "portal:keys", "portal:topups",
                                  "portal:usage", "portal:settings",
                                  "portal:password_change"])
def test_every_page_renders_for_a_signed_in_user(member_client, name):
    response = member_client.get(reverse(name))

    assert response.status_code == 200
    page = response.content.decode()
    assert "member@example.com" in page  # the header says who is signed in
    assert 'action="/logout/"' in page


def test_the_dashboard_shows_balance_holds_spend_and_a_quick_start(member_client, member,
                                                                   make_usage):
    price_set(model="gpt-4o-mini", input_usd_per_mtok="1", output_usd_per_mtok="2")
    make_usage(member, cost_micros=1_250_000)
    make_usage(member, cost_micros=250_000)

    page = member_client.get(reverse("portal:dashboard")).content.decode()

    assert f'data-testid="available-balance">{money_html(10_000_000)}<' in page
    assert f'data-testid="held-balance">{money_html(0)}<' in page
    assert f'data-testid="spent-today">{money_html(1_500_000)}<' in page
    assert f'data-testid="spent-month">{money_html(1_500_000)}<' in page
    assert "2 requests since 00:00 UTC" in page
    # The snippets use the address the browser reached, and a model that exists.
    assert "curl http://testserver/v1/chat/completions" in page
    assert 'base_url="http://testserver/v1"' in page
    assert '"model": "gpt-4o-mini"' in page


def test_the_dashboard_shows_the_low_balance_alert(member_client, member):
    balance_alert_set(user=member, threshold_micros=2_500_000)

    page = member_client.get(reverse("portal:dashboard")).content.decode()

    assert f"Low-balance alert below {money_html(2_500_000)}." in page


def test_a_new_user_without_a_wallet_sees_zero(client, make_user):
    client.force_login(make_user(email="fresh@example.com"))

    page = client.get(reverse("portal:dashboard")).content.decode()

    assert f'data-testid="available-balance">{money_html(0)}<' in page


def test_the_admin_is_for_staff_only(member_client):
    response = member_client.get("/admin/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    # Even the admin's own models: nothing is shown, the login page is.
    response = member_client.get("/admin/billing/wallet/", follow=True)
    assert response.redirect_chain[-1][0].startswith("/admin/login/")
    assert "You are authenticated as member@example.com, but are not authorized" in (
        response.content.decode())


def test_staff_still_reach_the_admin(admin_client):
    assert admin_client.get("/admin/").status_code == 200


def test_the_stylesheet_and_script_are_served_locally(member_client):
    page = member_client.get(reverse("portal:dashboard")).content.decode()

    assert "/static/portal/portal.css" in page
    assert "/static/portal/portal.js" in page
    assert "https://" not in page.split("<body>")[0]  # nothing fetched from elsewhere
