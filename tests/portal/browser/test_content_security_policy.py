"""The site's Content-Security-Policy in a real browser: every portal page, the admin's pages
and the API docs (Swagger UI) load and work with it, and Chromium reports no violation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import Page, Route, expect

from accounts.models import User
from accounts.services import api_key_create, user_create
from billing.models import UsageRecord
from billing.services import price_set, wallet_credit
from proxy.models import Worker
from proxy.services import worker_create
from tests.live_router import LiveRouter
from tests.portal.browser.conftest import in_thread, needs_chromium
from tests.portal.conftest import PASSWORD
from tests.router_admin.csp import EXPECTED_POLICY, policy_directives
from tests.staff import authenticator_code

# One seeded state for the module (see shared_site). The tests write only what no other
# test looks at (a key, vouchers); the one that enrols a second factor has its own staff.
pytestmark = [needs_chromium, pytest.mark.django_db]

MEMBER = "csp.member@example.com"
STAFF = "csp.staff@example.com"
ENROLLING_STAFF = "csp.staff.enrolling@example.com"
CHECKOUT_URL = "https://checkout.stripe.com/c/pay/cs_test_csp"

# Runs in every document before its own scripts, so that no violation goes unheard: the
# browser fires `securitypolicyviolation` at the document for each thing it refuses.
LISTEN_FOR_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.reportCspViolation({
    page: document.location.href, directive: event.effectiveDirective,
    blocked: event.blockedURI, sample: event.sample,
    source: event.sourceFile + ":" + event.lineNumber,
  });
});
"""


@dataclass
class Watch:
    """What the browser reported: policy violations (events and console lines) and
    uncaught script errors, a page whose code broke."""

    violations: list[dict[str, Any]] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    policies: dict[str, str] = field(default_factory=dict)

    def assert_clean(self) -> None:
        assert self.violations == []
        assert self.console == []
        assert self.errors == []


@pytest.fixture
def watch(page: Page) -> Iterator[Watch]:
    seen = Watch()
    page.expose_function("reportCspViolation",
                         lambda violation: seen.violations.append(violation))
    page.add_init_script(LISTEN_FOR_VIOLATIONS)
    page.on("console", lambda message: seen.console.append(message.text)
            if "Content Security Policy" in message.text else None)
    page.on("pageerror", lambda error: seen.errors.append(f"{page.url}: {error}"))

    def remember_policy(response: Any) -> None:
        if response.request.resource_type == "document":
            seen.policies[response.url] = response.headers.get("content-security-policy", "")

    page.on("response", remember_policy)
    yield seen
    seen.assert_clean()


@dataclass
class Site:
    member_key_id: int
    wallet_id: int


def _fill_the_site() -> Site:
    member = user_create(email=MEMBER, password=PASSWORD)
    wallet_credit(user=member, amount_micros=10_000_000, idempotency_key="csp-browser-fund",
                  memo="welcome credit", kind="topup")
    api_key = api_key_create(user=member, name="ci").api_key
    price = price_set(model="csp-model", input_usd_per_mtok="1", output_usd_per_mtok="2")
    UsageRecord.objects.create(request_id="csp-browser-1", user=member, api_key=api_key,
                               model="csp-model", price=price, prompt_tokens=1000,
                               completion_tokens=500, cost_micros=2000, latency_ms=120)
    worker_create(name="mock", kind="mock", models=[("csp-model", "")])
    user_create(email=STAFF, password=PASSWORD, is_staff=True, is_superuser=True)
    user_create(email=ENROLLING_STAFF, password=PASSWORD, is_staff=True, is_superuser=True)
    return Site(member_key_id=api_key.pk, wallet_id=User.objects.get(email=MEMBER).wallet.pk)


@pytest.fixture(scope="module")
def seeded(shared_site: LiveRouter) -> Site:
    return in_thread(_fill_the_site)


@pytest.fixture
def site(shared_site: LiveRouter) -> LiveRouter:
    return shared_site


@pytest.fixture
def page(shared_page: Page) -> Page:
    """A fresh page (cookies of its own) over the module's seeded state."""
    return shared_page


@pytest.fixture
def filled(seeded: Site, settings, stripe_keys, monkeypatch) -> Site:
    # The admin's pages are under test here, not staff's sign-in: no second factor.
    settings.ROUTER_STAFF_2FA = False
    # Stripe stands in: the top-up form's redirect goes to Stripe Checkout's real address,
    # which the browser is then served locally (see _pretend_to_be_stripe).
    monkeypatch.setattr("portal.views.topups.topup_checkout_create",
                        lambda **kwargs: CHECKOUT_URL)
    return seeded


def _pretend_to_be_stripe(route: Route) -> None:
    route.fulfill(status=200, content_type="text/html",
                  body="<!doctype html><title>Stripe Checkout</title><h1>Pay</h1>")


def _sign_in(page: Page, url: str, email: str) -> None:
    page.goto(url)
    page.locator("input[name=username]").fill(email)
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("form [type=submit]").click()


def test_the_portal_works_under_the_policy_with_no_violation(
        filled: Site, page: Page, watch: Watch, site: LiveRouter) -> None:
    # The signed-out pages.
    for url in ("/signup/", "/password-reset/", "/login/"):
        page.goto(url)
        expect(page.locator("form button[type=submit]")).to_be_visible()
    # A stylesheet that loads: the page is laid out by portal.css, not the browser's default.
    expect(page.locator(".auth-card")).to_have_css("max-width", "420px")

    _sign_in(page, "/login/", MEMBER)
    expect(page).to_have_url(f"{site.url}/")
    # portal.js runs: the copy buttons copy.
    copy = page.locator("button.copy").first
    copy.click()
    expect(copy).to_have_text("Copied")

    page.goto("/keys/")
    page.get_by_label("Name").fill("browser key")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_test_id("new-secret").inner_text().strip()
    page.locator("button.copy[data-copy-from=new-secret]").click()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    for url in (f"/keys/{filled.member_key_id}/", f"/keys/{filled.member_key_id}/revoke/",
                "/settings/", "/settings/password/", "/tokens/"):
        page.goto(url)
        expect(page.locator("main h1")).to_be_visible()

    # The charts are drawn, and coloured by the stylesheet.
    page.goto("/usage/")
    bar = page.get_by_test_id("spend-chart").locator("rect.bar")
    expect(bar).to_have_count(1)
    expect(bar).to_have_css("fill", "rgb(43, 89, 195)")
    expect(page.get_by_test_id("tokens-chart").locator("rect.bar")).to_have_count(2)

    # The top-up form leads to Stripe Checkout through a redirect, which form-action allows.
    page.route(CHECKOUT_URL, _pretend_to_be_stripe)
    page.goto("/topups/")
    page.get_by_label("Amount").fill("20")
    page.get_by_role("button", name="Continue to payment").click()
    expect(page).to_have_url(CHECKOUT_URL)
    expect(page.get_by_role("heading", name="Pay")).to_be_visible()

    our_pages = {url: policy for url, policy in watch.policies.items()
                 if url.startswith(site.url)}
    assert len(our_pages) >= 10
    for url, policy in our_pages.items():
        assert policy_directives(policy) == EXPECTED_POLICY, url


def test_the_api_docs_render_and_try_requests_under_the_policy(
        filled: Site, page: Page, watch: Watch, site: LiveRouter) -> None:
    _sign_in(page, "/login/", MEMBER)
    page.goto("/api/docs/")

    # Swagger UI ran: it fetched the schema and lists the operations.
    expect(page.locator(".opblock").first).to_be_visible()
    assert page.locator(".opblock").count() >= 10
    expect(page.locator(".opblock-summary-path", has_text="/api/balance").first).to_be_visible()

    # "Try it out" with the session: a POST carries the CSRF token from the page's data, so
    # Django judges the request (a 400 for the unknown code), not the token (a 403).
    redeem = page.locator(".opblock-post", has=page.locator(
        ".opblock-summary-path", has_text="/api/vouchers/redeem"))
    redeem.locator(".opblock-summary").click()
    redeem.get_by_role("button", name="Try it out").click()
    redeem.locator("textarea.body-param__text").fill(json.dumps({"code": "NOPE-NOPE"}))
    redeem.get_by_role("button", name="Execute").click()
    status = redeem.locator(".live-responses-table tbody .response-col_status")
    expect(status).to_have_text("400", timeout=10_000)

    assert policy_directives(watch.policies[f"{site.url}/api/docs/"]) == EXPECTED_POLICY


def test_the_admin_works_under_the_policy_with_no_violation(
        filled: Site, page: Page, watch: Watch, site: LiveRouter) -> None:
    _sign_in(page, "/admin/login/", STAFF)
    expect(page).to_have_url(f"{site.url}/admin/")
    expect(page.locator("#site-name")).to_be_visible()

    for name in ("accounts_user", "accounts_apikey", "billing_wallet", "billing_ledgerentry",
                 "billing_usagerecord", "billing_modelprice", "billing_voucher",
                 "proxy_worker"):
        page.goto(reverse(f"admin:{name}_changelist"))
        expect(page.locator("#changelist")).to_be_visible()
    # The workers' badges are styled by our stylesheet, and Django's actions.js runs.
    expect(page.locator(".router-badge.healthy")).to_have_css("background-color",
                                                               "rgb(46, 125, 50)")
    page.locator("#action-toggle").check()
    expect(page.locator(".action-counter")).to_contain_text("1 of 1 selected")

    # Change forms, with Django's widgets' scripts: the calendar and clock shortcuts.
    member = in_thread(User.objects.get, email=MEMBER)
    page.goto(reverse("admin:accounts_user_change", args=[member.pk]))
    expect(page.locator("#user_form")).to_be_visible()
    page.goto(reverse("admin:accounts_apikey_change", args=[filled.member_key_id]))
    expect(page.locator(".datetimeshortcuts").first).to_be_visible()
    worker = in_thread(Worker.objects.get)
    page.goto(reverse("admin:proxy_worker_change", args=[worker.pk]))
    expect(page.locator("#worker_form")).to_be_visible()

    # A new key's secret, shown once, selectable in one click. Its user is picked in the
    # autocomplete widget (select2, asking the admin for matches as one types).
    page.goto(reverse("admin:accounts_apikey_add"))
    page.locator("#id_user + .select2").click()
    page.locator(".select2-search__field").fill("csp.member")
    page.locator(".select2-results__option", has_text=MEMBER).click()
    page.locator("#id_name").fill("from staff")
    page.locator("input[name=_save]").click()
    expect(page.locator("#api-key-secret")).to_have_css("user-select", "all")

    # Vouchers: the batch's codes, and their CSV from a data: link.
    page.goto(reverse("admin:billing_voucher_generate"))
    page.locator("#id_amount").fill("2.50")
    page.locator("#id_count").fill("2")
    page.locator("input[type=submit]").click()
    expect(page.locator("#voucher-codes")).to_have_css("font-family", "monospace")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download as CSV").click()
    assert "code" in download.value.path().read_text()

    # The wallets' credit action: its intermediate page.
    page.goto(reverse("admin:billing_wallet_changelist"))
    page.locator(f"input[name=_selected_action][value='{filled.wallet_id}']").check()
    page.locator("select[name=action]").select_option("credit_wallets")
    page.locator("button[name=index]").click()
    expect(page.get_by_role("button", name="Write the ledger entries")).to_be_visible()

    admin_pages = [url for url in watch.policies if url.startswith(f"{site.url}/admin/")]
    assert len(admin_pages) >= 15
    for url in admin_pages:
        assert policy_directives(watch.policies[url]) == EXPECTED_POLICY, url


def test_staff_second_factor_pages_work_under_the_policy(
        filled: Site, page: Page, watch: Watch, site: LiveRouter, settings) -> None:
    settings.ROUTER_STAFF_2FA = True

    # First sign-in: the authenticator's QR code, then the recovery codes.
    _sign_in(page, "/admin/login/", ENROLLING_STAFF)
    expect(page).to_have_url(f"{site.url}/admin/two-factor/enrol/?next=/admin/")
    expect(page.locator(".two-factor-qr svg")).to_be_visible()
    device = in_thread(TOTPDevice.objects.get, user__email=ENROLLING_STAFF)
    page.locator("input[name=code]").fill(authenticator_code(device))
    page.locator("#login-form [type=submit]").click()
    recovery_code = page.locator(".two-factor-recovery-codes code").first.inner_text()
    page.get_by_role("link", name="continue to the admin").click()
    expect(page).to_have_url(f"{site.url}/admin/")

    # The next sign-in asks for a code.
    page.locator("#logout-form [type=submit]").click()
    _sign_in(page, "/admin/login/", ENROLLING_STAFF)
    expect(page).to_have_url(f"{site.url}/admin/two-factor/?next=/admin/")
    page.locator("input[name=code]").fill(recovery_code)
    page.locator("#login-form [type=submit]").click()
    expect(page).to_have_url(f"{site.url}/admin/")

    for url in (f"{site.url}/admin/two-factor/enrol/?next=/admin/",
                f"{site.url}/admin/two-factor/?next=/admin/"):
        assert policy_directives(watch.policies[url]) == EXPECTED_POLICY
