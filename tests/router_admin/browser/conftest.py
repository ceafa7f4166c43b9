"""The admin in Debian's Chromium against the live router: staff signed in, and a row with
realistically long values (emails, request ids, idempotency keys, memos) in every list the
operators use, so that a page that fits here fits with real data."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

# The portal's browser fixtures: the live site over one seeded state for the module, and
# a fresh Chromium page at 1280 x 900 for each test.
from tests.portal.browser.conftest import in_thread, shared_page, shared_site  # noqa: F401
from tests.portal.conftest import PASSWORD

AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
STAFF = "operator.on.call@binom-router.example.com"
MEMBER = "a.customer.with.a.long.address@customers.example.com"
WIDE, NARROW = 1280, 390
# What axe-core reports that the issue forbids (it also reports "moderate" and "minor").
FORBIDDEN_IMPACTS = ("critical", "serious")

# The dashboard and the list pages staff work in, by admin URL name.
LIST_PAGES = {
    "users": "admin:accounts_user_changelist",
    "wallets": "admin:billing_wallet_changelist",
    "ledger": "admin:billing_ledgerentry_changelist",
    "usage-records": "admin:billing_usagerecord_changelist",
    "holds": "admin:billing_hold_changelist",
    "workers": "admin:proxy_worker_changelist",
    "prices": "admin:billing_modelprice_changelist",
    "top-ups": "admin:billing_checkouttopup_changelist",
    "vouchers": "admin:billing_voucher_changelist",
}
PAGES = {"dashboard": "admin:index", **LIST_PAGES}


@dataclass
class Seeded:
    member_id: int


def _seed() -> Seeded:
    from accounts.services import api_key_create, user_create
    from billing.models import CheckoutTopUp, UsageRecord
    from billing.services import price_set, wallet_credit
    from billing.services.holds import hold_create
    from billing.services.vouchers import voucher_batch_create
    from proxy.services import worker_create

    user_create(email=STAFF, password=PASSWORD, is_staff=True, is_superuser=True)
    member = user_create(email=MEMBER, password=PASSWORD, name="A Customer With A Long Name")
    wallet_credit(user=member, amount_micros=1_234_567_891, kind="topup",
                  idempotency_key=f"stripe:checkout:cs_live_{uuid.uuid4().hex}{uuid.uuid4().hex}",
                  memo="Card top-up through Stripe Checkout, session cs_live_a1b2c3d4e5f6g7h8i9 "
                       "for the customer's monthly budget, approved by finance")
    api_key = api_key_create(user=member, name="production backend").api_key
    price = price_set(model="anthropic/claude-3-7-sonnet-20250219", input_usd_per_mtok="3",
                      output_usd_per_mtok="15", max_output_tokens=8192)
    for n in range(3):
        UsageRecord.objects.create(
            request_id=f"chatcmpl-{uuid.uuid4().hex}{n}", user=member, api_key=api_key,
            model=price.model, price=price, prompt_tokens=123_456, completion_tokens=7_890,
            cost_micros=488_718, latency_ms=12_345)
    hold_create(user=member, hold_id=f"req_{uuid.uuid4().hex}", amount_micros=122_880_000,
                price=price, model=price.model, api_key=api_key,
                expires_at=timezone.now() + timedelta(minutes=15))
    worker_create(name="eu-west-anthropic-primary", kind="mock",
                  models=[(price.model, "claude-3-7-sonnet-20250219")])
    CheckoutTopUp.objects.create(user=member, amount_micros=250_000_000, currency="usd",
                                 status="open", session_id=f"cs_live_{uuid.uuid4().hex}")
    voucher_batch_create(amount_micros=50_000_000, count=2,
                         memo="Conference giveaway, PyCon Europe booth, second day")
    return Seeded(member_id=member.pk)


@pytest.fixture(scope="module")
def seeded(shared_site) -> Iterator[Seeded]:  # noqa: F811 - the imported fixture
    """One seeded state for the module's tests, which only look at it (see shared_site)."""
    # The pages are under test here, not staff's sign-in (tests/router_admin covers it).
    with override_settings(ROUTER_STAFF_2FA=False):
        yield in_thread(_seed)


@pytest.fixture
def staff_page(seeded: Seeded, shared_page: Any) -> Any:  # noqa: F811 - the imported fixture
    """A fresh browser page (cookies of its own), signed in to the admin as staff."""
    page = shared_page
    page.goto(reverse("admin:login"))
    page.locator("input[name=username]").fill(STAFF)
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("form [type=submit]").click()
    page.wait_for_url("**/admin/")
    return page


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go: pytest's temporary folder, never the repository."""
    return tmp_path_factory.mktemp("admin-screenshots")


def overflow(browser_page: Any) -> dict[str, int]:
    """By how many pixels the document is wider than the window, and the list's table wider
    than its box (Django's changelist scrolls the table inside its box, so columns pushed off
    the screen show only there); 0 for each: everything in view."""
    return browser_page.evaluate("""() => {
        const results = document.querySelector("#changelist-form .results");
        return {
            page: document.documentElement.scrollWidth - document.documentElement.clientWidth,
            table: results ? results.scrollWidth - results.clientWidth : 0,
        };
    }""")


def accessibility_violations(browser_page: Any) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now. The script is evaluated through the
    DevTools protocol, which the site's Content-Security-Policy (no inline script) does not
    govern, so the page is checked under its real policy."""
    if not browser_page.evaluate("typeof window.axe !== 'undefined'"):
        browser_page.evaluate(AXE.read_text(encoding="utf-8"))
    return browser_page.evaluate("""async () => {
        const results = await axe.run(document, {resultTypes: ["violations"]});
        return results.violations.map(v => ({
            id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.map(n => n.target.join(" ") + " :: " + n.failureSummary)}));
    }""")


def describe(violations: list[dict[str, Any]]) -> str:
    return json.dumps(violations, indent=1)
