"""Balance and vouchers over the API."""

from __future__ import annotations

from billing.models import LedgerEntry
from billing.selectors import wallet_balance
from billing.services import hold_create
from billing.services.vouchers import voucher_batch_create


def test_the_balance_shows_posted_held_available_and_spend(api, member, make_usage, price):
    hold_create(user=member, hold_id="in-flight", amount_micros=250_000, price=price,
                model=price.model)
    make_usage(member, cost_micros=1_234)

    body = api.get("/api/balance").json()

    assert body["posted_micros"] == 10_000_000
    assert body["posted_usd"] == "10.000000"
    assert body["held_micros"] == 250_000
    assert body["held_usd"] == "0.250000"
    assert body["available_micros"] == 9_750_000
    assert body["available_usd"] == "9.750000"
    assert body["spend_today_micros"] == body["spend_month_micros"] == 1_234
    assert body["spend_today_usd"] == "0.001234"
    assert body["requests_today"] == 1


def test_a_new_user_has_a_zero_balance(client_for, make_user):
    body = client_for(make_user()).get("/api/balance").json()

    assert body["available_usd"] == "0.000000"
    assert body["posted_micros"] == 0


def test_a_voucher_credits_once_and_answers_the_new_balance(api, member):
    [code] = voucher_batch_create(amount_micros=2_500_000, count=1)

    first = api.post("/api/vouchers/redeem", {"code": code}, format="json")
    again = api.post("/api/vouchers/redeem", {"code": code}, format="json")

    assert first.status_code == 200
    assert first.json()["credited_usd"] == "2.500000"
    assert first.json()["balance"]["posted_micros"] == 12_500_000
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "voucher_invalid"
    assert wallet_balance(user=member).posted_micros == 12_500_000
    assert LedgerEntry.objects.filter(wallet__user=member, kind="voucher").count() == 1


def test_an_unknown_or_missing_code_is_a_400(api):
    unknown = api.post("/api/vouchers/redeem", {"code": "NOT-A-CODE"}, format="json")
    missing = api.post("/api/vouchers/redeem", {}, format="json")

    assert unknown.status_code == missing.status_code == 400
    assert unknown.json()["error"]["code"] == "voucher_invalid"
    assert missing.json()["error"]["fields"]["code"] == ["This field is required."]
