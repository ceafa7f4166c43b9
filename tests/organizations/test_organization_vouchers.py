"""Vouchers redeemed into an organization's wallet: by billing members and owners only,
credited there (never to the redeemer), once, and audited."""

from __future__ import annotations

import pytest

from accounts.services import user_create
from audit.models import AuditEntry
from billing.errors import VoucherInvalid
from billing.models import LedgerEntry, Voucher, Wallet
from billing.services.vouchers import voucher_batch_create, voucher_redeem
from organizations.errors import NotAllowed
from organizations.models import Role
from organizations.services import (
    invitation_accept,
    invitation_create,
    organization_create,
    organization_voucher_redeem,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme():
    owner = user_create(email="owner@example.com")
    organization = organization_create(name="Acme", owner=owner)
    people = {"owner": owner}
    for role in (Role.ADMIN, Role.BILLING, Role.MEMBER):
        people[role] = user_create(email=f"{role}@example.com")
        _, token = invitation_create(organization=organization, actor=owner,
                                     email=people[role].email, role=role)
        invitation_accept(token=token, user=people[role])
    return organization, people


def _wallet(organization) -> Wallet:
    return Wallet.objects.get(organization=organization)


@pytest.mark.parametrize("role", ["owner", "billing"])
def test_billing_members_and_owners_credit_the_organization_not_themselves(acme, role):
    organization, people = acme
    [code] = voucher_batch_create(amount_micros=3_000_000, count=1)

    entry = organization_voucher_redeem(organization=organization, actor=people[role],
                                        code=code)

    assert entry.wallet_id == _wallet(organization).pk
    assert _wallet(organization).posted_micros == 3_000_000
    assert Wallet.objects.get(user=people[role]).posted_micros == 0
    assert Voucher.objects.get().redeemed_by == people[role]
    audit = AuditEntry.objects.get(action="organization.voucher")
    assert audit.after == {"amount_micros": 3_000_000, "ledger_entry": entry.pk}


@pytest.mark.parametrize("role", ["admin", "member"])
def test_other_roles_may_not_redeem_into_the_organization(acme, role):
    organization, people = acme
    [code] = voucher_batch_create(amount_micros=3_000_000, count=1)

    with pytest.raises(NotAllowed):
        organization_voucher_redeem(organization=organization, actor=people[role], code=code)

    assert Voucher.objects.get().redeemed_at is None  # still good for someone allowed


def test_a_voucher_redeemed_into_an_organization_cannot_be_redeemed_again(acme):
    organization, people = acme
    [code] = voucher_batch_create(amount_micros=1_000_000, count=1)
    organization_voucher_redeem(organization=organization, actor=people["owner"], code=code)

    with pytest.raises(VoucherInvalid):
        voucher_redeem(user=people["member"], code=code)

    assert LedgerEntry.objects.filter(kind="voucher").count() == 1
