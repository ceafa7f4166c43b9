"""An organization with one member of each role, a stranger who runs another organization,
keys, an open invitation, a voucher, some usage and a credit with a receipt in each
organization: what the organization pages and the /api/orgs endpoints are tried against,
with Stripe a local fake (``org_stripe``). ``tests/portal/api/organizations`` imports it."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from accounts.models import ApiKey, User
from accounts.services import user_create
from billing.models import CheckoutTopUp, ModelPrice, UsageRecord, Wallet
from billing.services import price_set, wallet_credit
from billing.services.vouchers import voucher_batch_create
from organizations.models import Organization, Role
from organizations.services import (
    invitation_accept,
    invitation_create,
    organization_create,
    organization_key_create,
)
from tests.billing.auto_topup_fakes import FakeStripeAutoTopUp
from tests.billing.stripe_fakes import SECRET_KEY, WEBHOOK_SECRET
from tests.portal.conftest import PASSWORD

ROLES = ("owner", "admin", "billing", "member")
_requests = itertools.count(1)


@dataclass
class Team:
    organization: Organization
    other: Organization  # the stranger's own organization
    users: dict[str, User]  # by role, plus "target" (a plain member acted upon) and "outsider"
    keys: dict[str, ApiKey]  # each user's own key, "service", "foreign" (of ``other``)
    invitation_id: int
    foreign_invitation_id: int
    voucher: str
    receipt_id: int  # the organization's opening credit: a ledger entry with a receipt
    foreign_receipt_id: int  # the other organization's
    personal_receipt_id: int  # a credit of the owner's own wallet
    topups: dict[str, CheckoutTopUp]  # card top-ups: "org" (paid by billing), "foreign",
    # and "personal" (the owner's own)

    def placeholders(self, actor: str) -> dict[str, object]:
        """What a path or a body of the role table may name, as seen by ``actor``."""
        me = self.users[actor]
        return {"org": self.organization.pk, "other_org": self.other.pk,
                "target": self.users["target"].pk, "me": me.pk,
                "my_key": self.keys[actor if actor != "outsider" else "foreign"].pk,
                "target_key": self.keys["target"].pk, "service_key": self.keys["service"].pk,
                "foreign_key": self.keys["foreign"].pk, "invitation": self.invitation_id,
                "foreign_invitation": self.foreign_invitation_id,
                "outsider": self.users["outsider"].pk, "voucher": self.voucher,
                "name": self.organization.name, "receipt": self.receipt_id,
                "foreign_receipt": self.foreign_receipt_id,
                "personal_receipt": self.personal_receipt_id,
                "topup": self.topups["org"].pk, "foreign_topup": self.topups["foreign"].pk,
                "personal_topup": self.topups["personal"].pk}


def join(organization: Organization, inviter: User, user: User, role: str) -> None:
    _, token = invitation_create(organization=organization, actor=inviter, email=user.email,
                                 role=role)
    invitation_accept(token=token, user=user)


def usage_maker(price: ModelPrice) -> Callable[..., UsageRecord]:
    def make(api_key: ApiKey, *, cost_micros: int = 1_000, model: str = "test-model",
             prompt_tokens: int = 100, completion_tokens: int = 50) -> UsageRecord:
        return UsageRecord.objects.create(
            request_id=f"org-req-{next(_requests)}", user_id=api_key.user_id, api_key=api_key,
            organization_id=api_key.organization_id, model=model, price=price,
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            cost_micros=cost_micros, latency_ms=90)

    return make


@pytest.fixture
def org_usage(price: ModelPrice) -> Callable[..., UsageRecord]:
    """A request paid by an organization's wallet, made with ``api_key`` (its owner is the
    member the usage counts for)."""
    return usage_maker(price)


@pytest.fixture
def team(make_user, org_usage) -> Team:
    return seed_team(make_user, org_usage)


@pytest.fixture(scope="module")
def shared_team(request: pytest.FixtureRequest, django_db_setup: None,
                django_db_blocker: Any) -> Iterator[Team]:
    """``team`` seeded once for a whole module, emptied when the module ends: for modules of
    many tests that each roll back what they do (marked plain ``django_db``), such as the
    role tables, where seeding the team for each of about 220 cases took 30 s of their 37."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None or marker.kwargs.get("transaction") or marker.args:
        raise pytest.UsageError(f"{request.node.name} uses shared_team: mark it "
                                "`pytestmark = pytest.mark.django_db` (not transactional)")
    with django_db_blocker.unblock():
        price = price_set(model="test-model", input_usd_per_mtok="1",
                          output_usd_per_mtok="2", max_output_tokens=1000)
        emails = itertools.count(1)

        def make_user(email: str | None = None, **kwargs: Any) -> User:
            return user_create(email=email or f"shared{next(emails)}@example.com", **kwargs)

        try:
            yield seed_team(make_user, usage_maker(price))
        finally:
            call_command("flush", verbosity=0, interactive=False)


def seed_team(make_user: Callable[..., User],
              org_usage: Callable[..., UsageRecord]) -> Team:
    users = {role: make_user(email=f"{role}@example.com", password=PASSWORD)
             for role in (*ROLES, "target", "outsider")}
    organization = organization_create(name="Acme", owner=users["owner"])
    for role in (Role.ADMIN, Role.BILLING, Role.MEMBER):
        join(organization, users["owner"], users[role], role)
    join(organization, users["owner"], users["target"], Role.MEMBER)
    other = organization_create(name="Other Co", owner=users["outsider"])
    opening = wallet_credit(wallet=Wallet.objects.get(organization=organization),
                            amount_micros=50_000_000,
                            idempotency_key=f"fund-org-{organization.pk}",
                            memo="opening credit", kind="topup")
    foreign = wallet_credit(wallet=Wallet.objects.get(organization=other),
                            amount_micros=3_000_000, idempotency_key=f"fund-org-{other.pk}",
                            memo="their credit", kind="topup")
    personal = wallet_credit(user=users["owner"], amount_micros=1_000_000,
                             idempotency_key="fund-owner", memo="own credit", kind="topup")
    keys = {who: organization_key_create(organization=organization, actor=users[who],
                                         name=f"{who} key").api_key
            for who in (*ROLES, "target")}
    keys["service"] = organization_key_create(organization=organization,
                                              actor=users["admin"], name="ci",
                                              service=True).api_key
    keys["foreign"] = organization_key_create(organization=other, actor=users["outsider"],
                                              name="theirs").api_key
    invitation, _ = invitation_create(organization=organization, actor=users["owner"],
                                      email="invitee@example.com")
    foreign_invitation, _ = invitation_create(organization=other, actor=users["outsider"],
                                              email="invitee@example.com")
    for who in ("member", "target", "service"):
        org_usage(keys[who], cost_micros=2_000)
    org_usage(keys["foreign"], cost_micros=7_000)
    [voucher] = voucher_batch_create(amount_micros=5_000_000, count=1)
    topups = {name: CheckoutTopUp.objects.create(
        user=payer, wallet=Wallet.objects.get(**wallet), amount_micros=20_000_000,
        currency="usd", status=CheckoutTopUp.Status.OPEN, session_id=f"cs_team_{name}")
        for name, payer, wallet in (
            ("org", users["billing"], {"organization": organization}),
            ("foreign", users["outsider"], {"organization": other}),
            ("personal", users["owner"], {"user": users["owner"]}))}
    return Team(organization=organization, other=other, users=users, keys=keys,
                invitation_id=invitation.pk, foreign_invitation_id=foreign_invitation.pk,
                voucher=voucher, receipt_id=opening.pk, foreign_receipt_id=foreign.pk,
                personal_receipt_id=personal.pk, topups=topups)


@pytest.fixture(scope="module")
def _stripe_server() -> Iterator[FakeStripeAutoTopUp]:
    with FakeStripeAutoTopUp() as server:
        yield server


@pytest.fixture
def org_stripe(settings, _stripe_server) -> FakeStripeAutoTopUp:
    """Card payments on, Stripe a local fake answering as test mode does (Checkout in
    payment and setup mode, customers, payment intents); one server per test module."""
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = _stripe_server.url
    return _stripe_server


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client
