"""The admin of top-ups: vouchers generated and shown once, never edited; Stripe's records
read-only."""

from __future__ import annotations

import base64
import csv
import io

import pytest
from django.urls import reverse

from billing.models import CheckoutTopUp, StripeEvent, Voucher
from billing.services import wallet_credit
from billing.services.vouchers import voucher_batch_create, voucher_redeem
from billing.voucher_codes import code_digest
from tests.staff import staff_sign_in

pytestmark = pytest.mark.django_db

GENERATE_URL = "admin:billing_voucher_generate"


@pytest.fixture
def topup_history(user) -> list[str]:
    """A redeemed and an unused voucher, a credited Checkout top-up and its event."""
    codes = voucher_batch_create(amount_micros=3_000_000, count=2, memo="fixture")
    voucher_redeem(user=user, code=codes[0])
    entry = wallet_credit(user=user, amount_micros=20_000_000, kind="topup",
                          idempotency_key="stripe:pi_admin", memo="card")
    CheckoutTopUp.objects.create(user=user, amount_micros=20_000_000, currency="usd",
                                 session_id="cs_admin", payment_intent_id="pi_admin",
                                 status=CheckoutTopUp.Status.PAID, credited_entry=entry)
    StripeEvent.objects.create(event_id="evt_admin", type="checkout.session.completed")
    return codes


def generate(client, **data):
    form = {"amount": "2.50", "count": "3", "memo": "spring campaign", "expires_at": "",
            **data}
    return client.post(reverse(GENERATE_URL), form)


def csv_rows(response) -> list[dict[str, str]]:
    uri = response.context["csv_data_uri"]
    assert uri.startswith("data:text/csv;base64,")
    text = base64.b64decode(uri.removeprefix("data:text/csv;base64,")).decode()
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("model", ["voucher", "checkouttopup", "stripeevent"])
def test_every_top_up_list_and_detail_page_renders(admin_client, topup_history, model):
    response = admin_client.get(reverse(f"admin:billing_{model}_changelist"))
    assert response.status_code == 200
    obj = response.context["cl"].result_list[0]
    assert admin_client.get(reverse(f"admin:billing_{model}_change", args=[obj.pk])
                            ).status_code == 200


def test_the_voucher_list_shows_prefix_amount_batch_and_who_redeemed_when(
    admin_client, topup_history, user
):
    response = admin_client.get(reverse("admin:billing_voucher_changelist"))

    text = response.text
    assert "Generate vouchers" in text
    assert topup_history[0][:7] in text
    assert "3.000000" in text
    assert user.email in text
    assert "redeemed" in text
    assert "unused" in text
    for code in topup_history:
        assert code not in text


def test_generating_shows_the_codes_once_with_a_csv_and_stores_only_digests(admin_client,
                                                                           staff):
    response = generate(admin_client)

    assert response.status_code == 200
    codes = response.context["codes"]
    assert len(codes) == 3
    for code in codes:
        assert code in response.text
    assert "no-store" in response.headers["Cache-Control"]
    assert [row["code"] for row in csv_rows(response)] == codes
    assert {row["amount_usd"] for row in csv_rows(response)} == {"2.500000"}
    vouchers = Voucher.objects.all()
    assert {v.code_digest for v in vouchers} == {code_digest(c) for c in codes}
    assert {(v.amount_micros, v.memo, v.created_by_id) for v in vouchers} == {
        (2_500_000, "spring campaign", staff.pk)}
    # Gone for good: neither the list nor the form page shows them again.
    for url in (reverse("admin:billing_voucher_changelist"), reverse(GENERATE_URL)):
        page = admin_client.get(url).text
        assert not any(code in page for code in codes)


@pytest.mark.parametrize(("data", "message"), [
    ({"amount": "ten"}, "is not an amount of USD"),
    ({"amount": "0"}, "between 0.010000 and 10000.000000 USD"),
    ({"amount": "20000"}, "between 0.010000 and 10000.000000 USD"),
    ({"count": "0"}, "greater than or equal to 1"),
    ({"count": "10001"}, "less than or equal to 10000"),
    ({"expires_at": "2001-01-01 00:00"}, "expiry must be in the future"),
])
def test_bad_input_re_shows_the_form_with_the_reason_and_creates_nothing(admin_client, data,
                                                                         message):
    response = generate(admin_client, **data)

    assert response.status_code == 200
    assert response.context["codes"] == []
    assert message in response.text
    assert not Voucher.objects.exists()


def test_a_whole_code_pasted_in_search_finds_its_voucher(admin_client, topup_history):
    code = topup_history[1].lower().replace("-", " ")

    response = admin_client.get(reverse("admin:billing_voucher_changelist"), {"q": code})

    [found] = response.context["cl"].result_list
    assert found.code_digest == code_digest(topup_history[1])


def test_vouchers_cannot_be_added_one_by_one_or_edited(admin_client, topup_history):
    voucher = Voucher.objects.first()
    change_url = reverse("admin:billing_voucher_change", args=[voucher.pk])

    assert admin_client.get(reverse("admin:billing_voucher_add")).status_code == 403
    assert admin_client.post(change_url, {"amount_micros": 99_000_000}).status_code == 403
    assert 'name="amount_micros"' not in admin_client.get(change_url).text
    voucher.refresh_from_db()
    assert voucher.amount_micros == 3_000_000


def test_the_void_action_expires_only_unused_vouchers(admin_client, topup_history, user):
    response = admin_client.post(reverse("admin:billing_voucher_changelist"), {
        "action": "expire_now", "_selected_action": list(
            Voucher.objects.values_list("pk", flat=True))}, follow=True)

    assert "Voided 1 unused voucher(s)" in response.text
    assert Voucher.objects.get(redeemed_at__isnull=True).expires_at is not None
    assert Voucher.objects.get(redeemed_at__isnull=False).expires_at is None


def test_staff_without_the_voucher_permission_cannot_generate(client, make_user):
    clerk = make_user(is_staff=True)
    staff_sign_in(client, clerk)

    assert client.get(reverse(GENERATE_URL)).status_code == 403
    assert generate(client).status_code == 403
    assert not Voucher.objects.exists()


def test_anonymous_visitors_are_sent_to_the_login_page(client):
    response = client.get(reverse(GENERATE_URL))
    assert response.status_code == 302
    assert "/admin/login/" in response.headers["Location"]


@pytest.mark.parametrize("model", ["checkouttopup", "stripeevent"])
def test_stripe_records_are_read_only(admin_client, topup_history, model):
    obj_pk = admin_client.get(reverse(f"admin:billing_{model}_changelist")
                              ).context["cl"].result_list[0].pk

    assert admin_client.get(reverse(f"admin:billing_{model}_add")).status_code == 403
    assert admin_client.post(reverse(f"admin:billing_{model}_change", args=[obj_pk]),
                             {}).status_code == 403
    assert admin_client.post(reverse(f"admin:billing_{model}_delete", args=[obj_pk]),
                             {"post": "yes"}).status_code == 403
