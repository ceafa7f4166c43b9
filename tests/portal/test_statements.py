"""The portal's monthly statement: the signed-in user's own, printable, and as CSV whose sums
are the page's."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from unittest import mock

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.models import Wallet
from billing.services import wallet_credit

pytestmark = pytest.mark.django_db

PAGE, CSV = "portal:statement", "portal:statement_csv"


def this_month() -> str:
    return f"{timezone.now():%Y-%m}"


def _micros(text: str) -> int:
    whole, _, fraction = text.lstrip("-").partition(".")
    value = int(whole) * 1_000_000 + int(fraction.ljust(6, "0"))
    return -value if text.startswith("-") else value


def test_the_page_shows_this_months_statement_reconciled(member_client, member):
    wallet_credit(user=member, amount_micros=-2_500_000, kind="adjustment",
                  idempotency_key="adj", memo="correction")

    response = member_client.get(reverse(PAGE))

    assert response.status_code == 200
    s = response.context["statement"]
    assert (s.opening_micros, s.closing_micros) == (0, 7_500_000)
    assert s.reconciles
    text = response.text
    assert "$7.50" in text
    assert "$10.00" in text
    assert "-$2.50" in text
    assert 'data-testid="reconciles"' in text
    assert "statement.css" in text  # the print style sheet
    assert reverse(CSV) in text


def test_the_csvs_amounts_sum_to_the_pages_movement(member_client, member):
    wallet_credit(user=member, amount_micros=1_234_567, kind="voucher", idempotency_key="v",
                  memo="=HYPERLINK(evil)")
    s = member_client.get(reverse(PAGE)).context["statement"]

    response = member_client.get(reverse(CSV), {"month": this_month()})

    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response).decode())))
    assert _micros(rows[0]["balance_after_usd"]) == s.opening_micros
    assert _micros(rows[-1]["balance_after_usd"]) == s.closing_micros
    assert sum(_micros(r["amount_usd"]) for r in rows[1:-1]) == s.movement_micros == 11_234_567
    assert {r["memo"] for r in rows[1:-1]} == {"welcome credit", "'=HYPERLINK(evil)"}


def test_an_earlier_month_is_chosen_by_its_name(client, other):
    with mock.patch("django.utils.timezone.now",
                    return_value=datetime(2025, 6, 15, tzinfo=UTC)):
        wallet_credit(user=other, amount_micros=3_000_000, kind="topup",
                      idempotency_key="june", memo="june")
    client.force_login(other)
    member_client = client

    june = member_client.get(reverse(PAGE), {"month": "2025-06"}).context["statement"]
    july = member_client.get(reverse(PAGE), {"month": "2025-07"}).context["statement"]

    assert (june.opening_micros, june.closing_micros) == (0, 3_000_000)
    assert (july.opening_micros, july.closing_micros, july.movement_micros) == (
        3_000_000, 3_000_000, 0)


def test_another_users_statement_is_never_shown(member_client, member, other):
    wallet_credit(user=other, amount_micros=99_000_000, kind="topup", idempotency_key="o",
                  memo="other's secret credit")
    other_wallet = Wallet.objects.get(user=other)

    for params in ({"user": other.pk}, {"wallet": other_wallet.pk}, {"user_id": other.pk}):
        response = member_client.get(reverse(PAGE), params)
        assert response.context["statement"].user == member
        assert "other's secret credit" not in response.text
        assert "$99" not in response.text
        body = b"".join(member_client.get(reverse(CSV), params)).decode()
        assert "other" not in body
    # The only statements with a user in the URL are the admin's: a 404 for a member's
    # session (the admin sends non-staff to its login page).
    admin_url = reverse("admin:billing_wallet_statement", args=[other_wallet.pk])
    assert member_client.get(admin_url).status_code == 302


@pytest.mark.parametrize("month", ["2026-13", "june", "1999-01"])
def test_a_month_that_is_not_one_is_a_404(member_client, month):
    assert member_client.get(reverse(PAGE), {"month": month}).status_code == 404
    assert member_client.get(reverse(CSV), {"month": month}).status_code == 404


@pytest.mark.parametrize("name", [PAGE, CSV])
def test_signed_out_visitors_are_sent_to_sign_in(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert reverse("portal:login") in response["Location"]


def test_staff_see_a_users_statement_from_the_wallet_page(admin_client, member):
    wallet = Wallet.objects.get(user=member)
    url = reverse("admin:billing_wallet_statement", args=[wallet.pk])
    assert url in admin_client.get(reverse("admin:billing_wallet_change",
                                           args=[wallet.pk])).text

    response = admin_client.get(url)

    assert response.status_code == 200
    assert response.context["statement"].user == member
    assert member.email in response.text
    assert "$10.00" in response.text
    assert reverse("admin:billing_wallet_statement_csv", args=[wallet.pk]) in response.text
