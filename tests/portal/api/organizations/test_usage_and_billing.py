"""Usage and money through /api/orgs: members read their own requests only, others every
member's; sums per member, key and model; CSV without formulas; vouchers into the
organization's wallet."""

from __future__ import annotations

import csv
import io

import pytest

from billing.models import Wallet
from billing.services import wallet_credit
from organizations.services import organization_key_create
from tests.portal.api.conftest import session_client

pytestmark = pytest.mark.django_db


def test_a_member_reads_only_their_own_requests(team, client_for):
    body = client_for(team.users["member"]).get(
        f"/api/orgs/{team.organization.pk}/usage").json()

    assert {row["member_email"] for row in body["results"]} == {"member@example.com"}
    assert len(body["results"]) == 1
    assert body["has_more"] is False


def test_an_admin_reads_everyones_and_narrows_to_one_member(team):
    client = session_client(team.users["admin"])
    path = f"/api/orgs/{team.organization.pk}/usage"

    assert len(client.get(path).json()["results"]) == 3
    narrowed = client.get(path, {"member": team.users["target"].pk}).json()
    assert {row["member_email"] for row in narrowed["results"]} == {"target@example.com"}


def test_sums_per_member_key_and_model_add_up_to_the_same_spend(team):
    client = session_client(team.users["billing"])
    path = f"/api/orgs/{team.organization.pk}/usage"

    members = client.get(f"{path}/members").json()
    keys = client.get(f"{path}/keys").json()
    models = client.get(f"{path}/models").json()
    days = client.get(f"{path}/daily", {"days": 7}).json()

    # The service key's requests count against no member: a row of their own.
    assert sorted(str(row["email"]) for row in members) == [
        "None", "member@example.com", "target@example.com"]
    assert [row["service"] for row in keys].count(True) == 1
    assert models == [{"model": "test-model", "requests": 3, "prompt_tokens": 300,
                       "completion_tokens": 150, "cost_micros": 6_000,
                       "cost_usd": "0.006000"}]
    assert len(days) == 7
    for rows in (members, keys, models, days):
        assert sum(row["cost_micros"] for row in rows) == 6_000


def test_a_members_sums_are_their_own(team):
    members = session_client(team.users["member"]).get(
        f"/api/orgs/{team.organization.pk}/usage/members").json()

    assert [(row["email"], row["cost_micros"]) for row in members] == [
        ("member@example.com", 2_000)]


def test_the_csv_guards_against_spreadsheet_formulas(team, org_usage):
    key = organization_key_create(organization=team.organization, actor=team.users["member"],
                                  name="+cmd|' /C calc'!A0").api_key
    org_usage(key, model="-2+3")

    response = session_client(team.users["member"]).get(
        f"/api/orgs/{team.organization.pk}/usage", {"format": "csv"})

    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response).decode())))
    [row] = [row for row in rows if row["api_key"] == key.prefix]
    assert (row["api_key_name"], row["model"]) == ("'+cmd|' /C calc'!A0", "'-2+3")
    assert {row["member"] for row in rows} == {"member@example.com"}


def test_a_voucher_is_credited_to_the_organization(team, client_for):
    response = client_for(team.users["billing"]).post(
        f"/api/orgs/{team.organization.pk}/vouchers/redeem", {"code": team.voucher},
        format="json")

    assert response.status_code == 200
    body = response.json()
    assert (body["credited_usd"], body["balance"]["available_usd"]) == (
        "5.000000", "55.000000")
    assert Wallet.objects.get(organization=team.organization).posted_micros == 55_000_000


def test_a_used_voucher_is_a_400_voucher_invalid(team):
    client = session_client(team.users["owner"])
    path = f"/api/orgs/{team.organization.pk}/vouchers/redeem"
    client.post(path, {"code": team.voucher}, format="json")

    response = client.post(path, {"code": team.voucher}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "voucher_invalid"


def test_the_ledger_and_the_balance(team):
    client = session_client(team.users["owner"])

    ledger = client.get(f"/api/orgs/{team.organization.pk}/ledger").json()
    balance = client.get(f"/api/orgs/{team.organization.pk}/balance").json()

    [entry] = ledger["results"]
    assert (entry["kind"], entry["amount_usd"], entry["balance_after_usd"]) == (
        "topup", "50.000000", "50.000000")
    assert (balance["available_usd"], balance["spend_month_usd"]) == ("50.000000", "0.006000")


def test_the_ledger_pages_by_cursor_with_no_total(team):
    wallet = Wallet.objects.get(organization=team.organization)
    for n in range(5):
        wallet_credit(wallet=wallet, amount_micros=1_000 + n, kind="adjustment",
                      idempotency_key=f"api-ledger-{n}", memo=f"entry {n}")
    client = session_client(team.users["owner"])
    path = f"/api/orgs/{team.organization.pk}/ledger"

    first = client.get(path, {"page_size": 4}).json()
    second = client.get(first["next"]).json()
    forged = client.get(path, {"cursor": "forged"})
    foreign = session_client(team.users["billing"]).get(first["next"])

    assert set(first) == {"next", "previous", "has_more", "results"}
    assert [e["memo"] for e in first["results"]] == ["entry 4", "entry 3", "entry 2",
                                                    "entry 1"]
    assert first["has_more"]
    assert not second["has_more"]
    assert next(e["memo"] for e in second["results"]) == "entry 0"
    assert second["results"][-1]["kind"] == "topup"  # the opening credit, the oldest
    assert (forged.status_code, forged.json()["error"]["code"]) == (400, "invalid_cursor")
    assert foreign.status_code == 400  # a cursor is bound to its reader
