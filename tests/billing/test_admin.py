import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.models import Hold, LedgerEntry, ModelPrice, UsageRecord, Wallet
from billing.selectors import wallet_balance
from billing.services import (
    UsageReport,
    hold_create,
    hold_settle,
    price_set,
    wallet_credit,
    wallet_get_or_create,
)

BILLING_MODELS = ["wallet", "ledgerentry", "hold", "usagerecord", "modelprice"]


@pytest.fixture
def history(user, price) -> UsageRecord:
    """A user who topped up and made one settled request: a row in every billing table."""
    wallet_credit(user=user, amount_micros=5_000_000, idempotency_key="seed", memo="seed",
                  kind=LedgerEntry.Kind.TOPUP)
    hold_create(user=user, hold_id="req-settled", amount_micros=100_000, price=price,
                model=price.model)
    return hold_settle(hold_id="req-settled",
                       usage=UsageReport(prompt_tokens=10, completion_tokens=5)).usage_record


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def _credit(client, wallet: Wallet, **data):
    """Submit the credit action's intermediate form, as its page would."""
    form = {"action": "credit_wallets", "_selected_action": [wallet.pk], "apply": "yes",
            "operation_id": "6f1c2b9e-1d7a-4c55-9b7e-0f6a3e1d2c44", "kind": "adjustment",
            "reason": "goodwill", **data}
    return client.post(reverse("admin:billing_wallet_changelist"), form, follow=True)


@pytest.mark.parametrize("model", BILLING_MODELS)
def test_every_billing_list_and_detail_page_renders(admin_client, history, model):
    response = admin_client.get(reverse(f"admin:billing_{model}_changelist"))
    assert response.status_code == 200
    obj = response.context["cl"].result_list[0]
    assert admin_client.get(reverse(f"admin:billing_{model}_change", args=[obj.pk])
                            ).status_code == 200


def test_wallets_show_posted_pending_and_available_money_in_usd(admin_client, user, price):
    wallet_credit(user=user, amount_micros=3_250_000, idempotency_key="t", memo="")
    hold_create(user=user, hold_id="req-1", amount_micros=250_000, price=price,
                model=price.model)
    wallet = Wallet.objects.get(user=user)
    response = admin_client.get(reverse("admin:billing_wallet_change", args=[wallet.pk]))
    for amount in ("3.250000", "0.250000", "3.000000"):
        assert amount in response.text
    assert "The ledger and pending holds add up" in response.text


def test_a_wallets_ledger_link_lists_only_that_wallets_entries(admin_client, history,
                                                               make_user):
    other = make_user()
    wallet_credit(user=other, amount_micros=1, idempotency_key="other", memo="")
    wallet = Wallet.objects.get(user=history.user)
    response = admin_client.get(reverse("admin:billing_ledgerentry_changelist"),
                                {"wallet__id__exact": wallet.pk})
    assert {entry.wallet_id for entry in response.context["cl"].result_list} == {wallet.pk}


def test_the_credit_action_first_asks_for_an_amount_and_a_reason_and_writes_nothing(
    admin_client, user
):
    wallet = wallet_get_or_create(user=user)
    response = admin_client.post(reverse("admin:billing_wallet_changelist"), {
        "action": "credit_wallets", "_selected_action": [wallet.pk], "index": 0,
    })
    assert response.status_code == 200
    assert response.templates[0].name == "admin/billing/wallet/credit.html"
    assert {"amount_usd", "kind", "reason", "operation_id"} <= set(response.context["form"].fields)
    assert not LedgerEntry.objects.exists()


def test_the_credit_action_writes_one_entry_with_the_reason_and_the_staff_user(
    admin_client, user, staff
):
    wallet = wallet_get_or_create(user=user)
    response = _credit(admin_client, wallet, amount_usd="12.345678", kind="topup",
                       reason="Invoice 42 paid by wire")
    assert response.status_code == 200
    entry = LedgerEntry.objects.get()
    assert (entry.wallet, entry.kind, entry.amount_micros) == (wallet, "topup", 12_345_678)
    assert entry.memo == "Invoice 42 paid by wire"
    assert entry.created_by == staff
    assert entry.idempotency_key.startswith("admin:")
    assert wallet_balance(user=user).posted_micros == 12_345_678
    assert "Wrote 1 ledger entry totalling 12.345678 USD." in _messages(response)


def test_a_negative_adjustment_removes_money(admin_client, user):
    wallet_credit(user=user, amount_micros=2_000_000, idempotency_key="t", memo="")
    _credit(admin_client, Wallet.objects.get(user=user), amount_usd="-0.5",
            reason="refund of a test top-up")
    assert wallet_balance(user=user).posted_micros == 1_500_000


def test_submitting_the_same_credit_form_twice_credits_once(admin_client, user):
    wallet = wallet_get_or_create(user=user)
    _credit(admin_client, wallet, amount_usd="1")
    _credit(admin_client, wallet, amount_usd="1")
    assert LedgerEntry.objects.count() == 1


def test_one_submission_credits_every_selected_wallet(admin_client, make_user):
    wallets = [wallet_get_or_create(user=make_user()) for _ in range(2)]
    admin_client.post(reverse("admin:billing_wallet_changelist"), {
        "action": "credit_wallets", "_selected_action": [w.pk for w in wallets],
        "apply": "yes", "operation_id": "0b7e3c1a-35b4-4f1e-8a65-0d35c1f1b0a1",
        "kind": "topup", "amount_usd": "2", "reason": "launch promotion",
    })
    assert sorted(LedgerEntry.objects.values_list("wallet_id", "amount_micros")) == [
        (wallets[0].pk, 2_000_000), (wallets[1].pk, 2_000_000)
    ]


@pytest.mark.parametrize("amount", ["ten", "1.0000001", "", "NaN", "1e30"])
def test_a_bad_amount_shows_the_form_again_and_writes_nothing(admin_client, user, amount):
    response = _credit(admin_client, wallet_get_or_create(user=user), amount_usd=amount)
    assert response.status_code == 200
    assert response.context["form"].errors["amount_usd"]
    assert not LedgerEntry.objects.exists()


def test_a_missing_reason_shows_the_form_again_and_writes_nothing(admin_client, user):
    response = _credit(admin_client, wallet_get_or_create(user=user), amount_usd="1",
                       reason="  ")
    assert response.context["form"].errors["reason"]
    assert not LedgerEntry.objects.exists()


@pytest.mark.parametrize(("amount", "kind", "error"), [
    ("-1.000001", "adjustment", "available balance is $1.000000"),
    ("-1", "topup", "must add money"),
    ("0", "adjustment", "cannot be zero"),
])
def test_a_credit_the_ledger_refuses_shows_why_and_writes_nothing(admin_client, user, amount,
                                                                   kind, error):
    wallet_credit(user=user, amount_micros=1_000_000, idempotency_key="t", memo="")
    response = _credit(admin_client, Wallet.objects.get(user=user), amount_usd=amount,
                       kind=kind)
    assert error in " ".join(response.context["form"].non_field_errors())
    assert LedgerEntry.objects.count() == 1
    assert wallet_balance(user=user).posted_micros == 1_000_000


def test_if_one_selected_wallet_cannot_be_debited_no_wallet_is(admin_client, make_user):
    rich, poor = make_user(), make_user()
    wallet_credit(user=rich, amount_micros=5_000_000, idempotency_key="rich", memo="")
    wallets = [wallet_get_or_create(user=rich), wallet_get_or_create(user=poor)]
    admin_client.post(reverse("admin:billing_wallet_changelist"), {
        "action": "credit_wallets", "_selected_action": [w.pk for w in wallets],
        "apply": "yes", "operation_id": "0b7e3c1a-35b4-4f1e-8a65-0d35c1f1b0a1",
        "kind": "adjustment", "amount_usd": "-1", "reason": "clawback",
    })
    assert LedgerEntry.objects.count() == 1
    assert wallet_balance(user=rich).posted_micros == 5_000_000


def test_ledger_entries_cannot_be_added_changed_or_deleted_through_the_admin(admin_client,
                                                                              history):
    entry = LedgerEntry.objects.get(idempotency_key="seed")
    change_url = reverse("admin:billing_ledgerentry_change", args=[entry.pk])
    page = admin_client.get(change_url)
    assert page.status_code == 200
    assert 'name="_save"' not in page.text
    assert admin_client.post(change_url, {"memo": "rewritten"}).status_code == 403
    delete_url = reverse("admin:billing_ledgerentry_delete", args=[entry.pk])
    assert admin_client.get(delete_url).status_code == 403
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert admin_client.get(reverse("admin:billing_ledgerentry_add")).status_code == 403
    entry.refresh_from_db()
    assert entry.memo == "seed"
    assert LedgerEntry.objects.count() == 2


@pytest.mark.parametrize("model", ["wallet", "hold", "usagerecord"])
def test_wallets_holds_and_usage_are_read_only_in_the_admin(admin_client, history, model):
    obj = admin_client.get(
        reverse(f"admin:billing_{model}_changelist")).context["cl"].result_list[0]
    change_url = reverse(f"admin:billing_{model}_change", args=[obj.pk])
    assert 'name="_save"' not in admin_client.get(change_url).text
    assert admin_client.post(change_url, {}).status_code == 403
    assert admin_client.get(reverse(f"admin:billing_{model}_delete", args=[obj.pk])
                            ).status_code == 403
    assert admin_client.get(reverse(f"admin:billing_{model}_add")).status_code == 403


def test_adding_a_price_creates_a_new_version_and_records_who_added_it(admin_client, price,
                                                                        staff):
    later = timezone.now() + timedelta(hours=1)
    response = admin_client.post(reverse("admin:billing_modelprice_add"), {
        "model": price.model, "input_usd_per_mtok": "1.5", "output_usd_per_mtok": "3",
        "cached_input_usd_per_mtok": "", "cache_write_usd_per_mtok": "", "kind": "chat",
        "max_output_tokens": 2000,
        "effective_from_0": later.strftime("%Y-%m-%d"),
        "effective_from_1": later.strftime("%H:%M:%S"),
    })
    assert response.status_code == 302
    versions = ModelPrice.objects.filter(model=price.model).order_by("effective_from")
    assert [v.input_usd_per_mtok for v in versions] == [Decimal("1"), Decimal("1.5")]
    assert versions[1].created_by == staff
    price.refresh_from_db()
    assert price.input_usd_per_mtok == Decimal("1")


def test_a_price_with_too_many_decimals_is_refused(admin_client):
    response = admin_client.post(reverse("admin:billing_modelprice_add"), {
        "model": "m", "input_usd_per_mtok": "0.0000001", "output_usd_per_mtok": "1",
        "max_output_tokens": 10, "effective_from_0": "2030-01-01", "effective_from_1": "00:00",
    })
    assert response.status_code == 200
    assert "input_usd_per_mtok" in response.context["adminform"].form.errors
    assert not ModelPrice.objects.exists()


def test_an_existing_price_version_is_read_only_and_offers_a_new_version(admin_client, price):
    change_url = reverse("admin:billing_modelprice_change", args=[price.pk])
    page = admin_client.get(change_url)
    assert 'name="_save"' not in page.text
    assert "in force" in page.text
    assert f"{reverse('admin:billing_modelprice_add')}?model={price.model}" in page.text
    assert admin_client.post(change_url, {"input_usd_per_mtok": "0"}).status_code == 403
    price.refresh_from_db()
    assert price.input_usd_per_mtok == Decimal("1")


def test_the_price_list_filters_by_model_and_marks_superseded_versions(admin_client, price):
    price_set(model=price.model, input_usd_per_mtok="2", output_usd_per_mtok="2",
              effective_from=timezone.now() - timedelta(seconds=1))
    price_set(model="other-model", input_usd_per_mtok="1", output_usd_per_mtok="1")
    response = admin_client.get(reverse("admin:billing_modelprice_changelist"),
                                {"model": price.model})
    rows = response.context["cl"].result_list
    assert {row.model for row in rows} == {price.model}
    assert sorted(row.superseded for row in rows) == [False, True]


@pytest.mark.parametrize(("model", "query"), [
    ("hold", {"q": "req-settled"}), ("usagerecord", {"q": "req-settled"}),
    ("hold", {"q": "user"}), ("usagerecord", {"q": "user"}),
    ("hold", {"q": "test-model"}), ("usagerecord", {"q": "test-model"}),
    ("hold", {"status": "posted", "model": "test-model"}),
    ("usagerecord", {"status": "ok", "model": "test-model", "source": "provider"}),
])
def test_holds_and_usage_are_found_by_request_id_email_model_and_filters(
    admin_client, history, model, query
):
    response = admin_client.get(reverse(f"admin:billing_{model}_changelist"), query)
    assert [obj.pk for obj in response.context["cl"].result_list] == [
        (Hold if model == "hold" else UsageRecord).objects.get().pk
    ]


def test_holds_and_usage_filters_leave_out_what_does_not_match(admin_client, history):
    tomorrow = (timezone.now() + timedelta(days=1)).isoformat()
    for model, query in [("hold", {"status": "voided"}), ("usagerecord", {"source": "estimated"}),
                         ("usagerecord", {"q": "nobody@nowhere"}),
                         ("hold", {"created_at__gte": tomorrow})]:
        response = admin_client.get(reverse(f"admin:billing_{model}_changelist"), query)
        assert list(response.context["cl"].result_list) == [], (model, query)


@pytest.fixture
def flagged_usage(history) -> dict[str, UsageRecord]:
    """Usage records of two workers, one per flag, next to the unflagged ``history``."""
    def record(name: str, worker: str, **fields) -> UsageRecord:
        return UsageRecord.objects.create(
            request_id=f"req-{name}", user=history.user, model=history.model, worker=worker,
            price=history.price, **fields)

    return {
        "plain": history,
        "cut": record("cut", "up", over_cap=True),
        "capped": record("capped", "up", over_hold=True),
        "no_usage": record("no-usage", "up", source="estimated", estimate_reason="no_usage"),
        "left": record("left", "up", source="estimated", estimate_reason="incomplete"),
        "elsewhere": record("elsewhere", "other", over_cap=True),
    }


@pytest.mark.parametrize(("query", "names"), [
    ({"over_cap__exact": "1"}, {"cut", "elsewhere"}),
    ({"over_hold__exact": "1"}, {"capped"}),
    ({"estimate_reason__exact": "no_usage"}, {"no_usage"}),
    ({"source__exact": "estimated"}, {"no_usage", "left"}),
    ({"flagged": "bad_usage"}, {"no_usage"}),
    ({"flagged": "any"}, {"cut", "capped", "no_usage", "elsewhere"}),
    ({"flagged": "any", "worker": "up"}, {"cut", "capped", "no_usage"}),
])
def test_usage_records_are_filtered_by_their_flags_source_and_worker(admin_client, flagged_usage,
                                                                     query, names):
    response = admin_client.get(reverse("admin:billing_usagerecord_changelist"), query)

    found = {record.pk for record in response.context["cl"].result_list}
    assert found == {flagged_usage[name].pk for name in names}


def test_a_usage_record_shows_its_source_estimate_reason_and_flags(admin_client, flagged_usage):
    record = flagged_usage["no_usage"]
    UsageRecord.objects.filter(pk=record.pk).update(over_hold=True)

    response = admin_client.get(reverse("admin:billing_usagerecord_change", args=[record.pk]))

    text = re.sub(r"\s+", " ", response.content.decode())
    for label, value in [("Source", "Counted by the router"),
                         ("Estimate reason", "No usage reported"),
                         ("Over cap", '<img src="/static/admin/img/icon-no.svg" alt="False">'),
                         ("Over hold", '<img src="/static/admin/img/icon-yes.svg" alt="True">')]:
        assert f'<label>{label}:</label> <div class="readonly">{value}</div>' in text


@pytest.mark.parametrize("model", BILLING_MODELS)
def test_non_staff_users_are_redirected_to_the_admin_login(client, user, model):
    client.force_login(user)
    response = client.get(reverse(f"admin:billing_{model}_changelist"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
