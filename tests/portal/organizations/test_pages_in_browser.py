"""Every organization page in Chromium, signed in as an owner of an organization with
realistically long names: at 390 px nothing scrolls sideways (tables scroll in their own
box) and axe-core finds no critical or serious violation. The checks are the portal's own
(``tests/portal/browser/test_portal_a11y_and_mobile.py``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from tests.billing.stripe_fakes import SECRET_KEY, WEBHOOK_SECRET
from tests.portal.browser.conftest import in_thread, needs_chromium, page, site  # noqa: F401
from tests.portal.browser.test_portal_a11y_and_mobile import _check
from tests.portal.conftest import PASSWORD

pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True)]

OWNER = "the.owner.of.a.company.with.a.long.address@enterprise.example.com"
MEMBER = "a.member.of.the.team.with.a.long.address@enterprise.example.com"
NAME = "Enterprise Solutions International Holdings"


@dataclass
class Seeded:
    organization_id: int
    member_id: int
    key_id: int
    token: str
    receipt_id: int


def _seed() -> Seeded:
    from accounts.services import user_create
    from billing.models import UsageRecord, Wallet
    from billing.services import price_set, wallet_credit
    from organizations.models import Role
    from organizations.services import (
        invitation_accept,
        invitation_create,
        organization_create,
        organization_key_create,
    )

    owner = user_create(email=OWNER, password=PASSWORD)
    member = user_create(email=MEMBER, password=PASSWORD)
    organization = organization_create(name=NAME, owner=owner)
    _, token = invitation_create(organization=organization, actor=owner, email=member.email,
                                 role=Role.BILLING)
    invitation_accept(token=token, user=member)
    _, token = invitation_create(organization=organization, actor=owner,
                                 email="someone.invited.with.a.long.address@example.com")
    wallet = Wallet.objects.get(organization=organization)
    credit = wallet_credit(wallet=wallet, amount_micros=1_234_567_891, kind="topup",
                           idempotency_key=f"voucher:{uuid.uuid4().hex}",
                           memo="Voucher BR-ABCD")
    Wallet.objects.filter(pk=wallet.pk).update(
        billing_name=f"{NAME} (Europe) Limited, Accounts Payable Department",
        billing_address="Floor 27, One International Financial Centre Tower\n"
                        "1 Harbour View Street, Central\nHong Kong SAR")
    price = price_set(model="anthropic/claude-3-7-sonnet-20250219", input_usd_per_mtok="3",
                      output_usd_per_mtok="15", max_output_tokens=8192)
    keys = [organization_key_create(organization=organization, actor=who,
                                    name="production backend, EU region").api_key
            for who in (owner, member)]
    keys.append(organization_key_create(organization=organization, actor=owner,
                                        name="nightly evaluation pipeline",
                                        service=True).api_key)
    for n, key in enumerate(keys):
        UsageRecord.objects.create(
            request_id=f"chatcmpl-{uuid.uuid4().hex}{n}", user_id=key.user_id, api_key=key,
            organization=organization, model=price.model, price=price,
            prompt_tokens=123_456, completion_tokens=7_890, cost_micros=488_718,
            latency_ms=12_345)
    return Seeded(organization_id=organization.pk, member_id=member.pk, key_id=keys[1].pk,
                  token=token, receipt_id=credit.pk)


@pytest.fixture
def seeded(site: Any, settings: Any) -> Seeded:  # noqa: F811 - the imported fixture
    # Card payments on, so the billing pages show their forms (showing them calls nobody).
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    return in_thread(_seed)


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("organization-screenshots")


def _sign_in(browser_page: Any, email: str) -> None:
    browser_page.goto(reverse("portal:login"))
    browser_page.locator("input[name=username]").fill(email)
    browser_page.locator("input[name=password]").fill(PASSWORD)
    browser_page.locator("form [type=submit]").click()
    browser_page.wait_for_url(lambda url: "/login/" not in url)


def test_every_organization_page_fits_a_phone_and_is_accessible(
        seeded: Seeded, page: Any, screenshots: Path) -> None:  # noqa: F811
    org, member = seeded.organization_id, seeded.member_id
    pages = {
        "org-new": reverse("portal:org_new"),
        "org-overview": reverse("portal:org_overview", args=[org]),
        "org-members": reverse("portal:org_members", args=[org]),
        "org-delete": reverse("portal:org_delete", args=[org]),
        "org-invitations": reverse("portal:org_invitations", args=[org]),
        "org-keys": reverse("portal:org_keys", args=[org]),
        "org-key-revoke": reverse("portal:org_key_revoke", args=[org, seeded.key_id]),
        "org-budgets": reverse("portal:org_budgets", args=[org]),
        "org-budget-edit": reverse("portal:org_budget_edit", args=[org, member]),
        "org-usage": reverse("portal:org_usage", args=[org]),
        "org-billing": reverse("portal:org_billing", args=[org]),
        "org-auto-topup": reverse("portal:org_auto_topup", args=[org]),
        "org-billing-details": reverse("portal:org_billing_details", args=[org]),
        "org-statement": reverse("portal:org_statement", args=[org]),
        "org-receipt": reverse("portal:org_receipt", args=[org, seeded.receipt_id]),
    }
    _sign_in(page, OWNER)
    problems = []
    for name, url in pages.items():
        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto(url)
        problems += [f"{name}: {problem}" for problem in _check(page, name, screenshots)]
    assert not problems, "\n".join(problems)


def test_the_invitation_link_and_a_new_key_fit_and_are_accessible(
        seeded: Seeded, page: Any, screenshots: Path) -> None:  # noqa: F811
    page.goto(reverse("portal:invitation_accept", args=[seeded.token]))
    problems = _check(page, "invitation-signed-out", screenshots)

    page.set_viewport_size({"width": 1280, "height": 900})
    _sign_in(page, MEMBER)
    page.goto(reverse("portal:org_keys", args=[seeded.organization_id]))
    page.locator("input[name=name]").fill("staging")
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_test_id("new-secret")).to_be_visible()
    problems += _check(page, "org-key-created", screenshots)
    assert not problems, "\n".join(problems)
