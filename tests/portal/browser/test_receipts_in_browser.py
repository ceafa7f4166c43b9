"""A receipt in Chromium, under the site's Content-Security-Policy: accessible, fits a
phone, and printed without the portal around it; the billing details page too."""

from __future__ import annotations

from typing import Any

import pytest
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


def _seed() -> int:
    from accounts.services import user_create
    from billing.selectors.receipts import wallet_of_viewer
    from billing.services.billing_profiles import wallet_billing_profile_set
    from tests.billing.receipt_credits import voucher_redeemed

    user = user_create(email=EMAIL, password=PASSWORD)
    wallet_billing_profile_set(
        wallet=wallet_of_viewer(user=user),
        billing_name="Aktiengesellschaft für außerordentlich lange Firmennamen und Söhne",
        billing_address="Hauptstraße 1\n10115 Berlin\nGermany\nVAT DE123456789")
    entry, _ = voucher_redeemed(user, amount_micros=12_345_678)
    return entry.pk


@pytest.fixture
def receipt_id(site: Any) -> int:
    return in_thread(_seed)


def _sign_in(page: Any) -> None:
    page.goto("/login/")
    page.locator("input[name=username]").fill(EMAIL)
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("form [type=submit]").click()
    page.wait_for_url(lambda url: "/login/" not in url)


def _problems(page: Any) -> list[str]:
    problems = []
    for width in (1280, NARROW):
        page.set_viewport_size({"width": width, "height": 900})
        sideways = page.evaluate("() => document.documentElement.scrollWidth"
                                 " - document.documentElement.clientWidth")
        if sideways > 0:
            problems.append(f"scrolls sideways by {sideways} px at {width} px")
        bad = [v for v in accessibility_violations(page) if v["impact"] in FORBIDDEN_IMPACTS]
        if bad:
            problems.append(f"accessibility violations at {width} px: {describe(bad)}")
    return problems


def test_a_receipt_page_is_accessible_fits_a_phone_and_prints_alone(receipt_id, page):
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text)
            if "Content Security Policy" in message.text else None)
    _sign_in(page)

    page.goto(f"/topups/receipts/{receipt_id}/")

    receipt = page.get_by_test_id("receipt")
    expect(receipt).to_contain_text("$12.345678")
    expect(receipt).to_contain_text("Aktiengesellschaft")
    expect(page.locator(".receipt-issuer")).to_have_css("font-weight", "700")  # styled
    problems = _problems(page)
    assert not problems, "\n".join(problems)

    page.emulate_media(media="print")
    expect(receipt).to_be_visible()
    for chrome in (".topbar", ".footer", ".receipt-actions"):
        expect(page.locator(chrome)).to_be_hidden()
    assert refused == []


def test_the_billing_details_page_is_accessible_and_fits_a_phone(receipt_id, page):
    _sign_in(page)

    page.goto("/settings/billing/")

    expect(page.locator("textarea[name=billing_address]")).to_have_value(
        "Hauptstraße 1\n10115 Berlin\nGermany\nVAT DE123456789")
    problems = _problems(page)
    assert not problems, "\n".join(problems)
