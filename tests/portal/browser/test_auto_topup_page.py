"""The auto top-up page in Chromium, with everything it can show (a saved card, a reason it
switched itself off, a failed charge, a form error): it fits a 390 px phone without
scrolling sideways, and axe-core finds no critical or serious violation."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from tests.portal.browser.conftest import in_thread, needs_chromium
from tests.portal.conftest import PASSWORD
from tests.router_admin.browser.conftest import (
    FORBIDDEN_IMPACTS,
    NARROW,
    accessibility_violations,
    describe,
)

pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True)]

EMAIL = "a.customer.with.a.rather.long.address@customers.example.com"


def _seed() -> None:
    from accounts.services import user_create
    from billing.models import AutoTopUp, AutoTopUpCharge
    from billing.selectors.auto_topup import month_of
    from billing.services.wallets import wallet_get_or_create

    wallet = wallet_get_or_create(user=user_create(email=EMAIL, password=PASSWORD))
    reason = ("The card was declined: Your card has insufficient funds. (insufficient_funds)")
    AutoTopUp.objects.create(
        wallet=wallet, threshold_micros=5_000_000, amount_micros=20_000_000,
        monthly_ceiling_micros=100_000_000, month=month_of(timezone.now()),
        stripe_customer_id="cus_test_1", payment_method_id="pm_card_visa", card_brand="visa",
        card_last4="4242", disabled_reason=reason, disabled_at=timezone.now())
    AutoTopUpCharge.objects.create(
        wallet=wallet, amount_micros=20_000_000, month=month_of(timezone.now()),
        status="failed", stripe_customer_id="cus_test_1", payment_method_id="pm_card_visa",
        failure_reason=reason)


def _problems(page: Any) -> list[str]:
    problems = []
    for width in (1280, NARROW):
        page.set_viewport_size({"width": width, "height": 900})
        bad = [v for v in accessibility_violations(page) if v["impact"] in FORBIDDEN_IMPACTS]
        if bad:
            problems.append(f"accessibility violations at {width} px: {describe(bad)}")
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    if overflow > 0:
        problems.append(f"the page scrolls sideways at {NARROW} px by {overflow} px")
    return problems


def test_the_auto_top_up_page_fits_a_phone_and_is_accessible(site: Any, settings: Any,
                                                              page: Any) -> None:
    settings.STRIPE_SECRET_KEY = "sk_test_binom_router_tests"
    settings.STRIPE_WEBHOOK_SECRET = "whsec_binom_router_tests"
    in_thread(_seed)
    page.goto(reverse("portal:login"))
    page.locator("input[name=username]").fill(EMAIL)
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("form [type=submit]").click()
    page.wait_for_url(lambda url: "/login/" not in url)

    page.goto(reverse("portal:auto_topup"))
    expect(page.get_by_test_id("auto-topup-disabled-reason")).to_contain_text("insufficient")
    expect(page.get_by_test_id("auto-topup-card")).to_have_text("Visa ending in 4242")
    assert not _problems(page), "\n".join(_problems(page))

    page.set_viewport_size({"width": 1280, "height": 900})
    page.locator("#id_monthly_ceiling_usd").fill("1")  # below the amount: a field error
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".field-error").first).to_contain_text("at least the amount")
    problems = _problems(page)
    assert not problems, "\n".join(problems)
