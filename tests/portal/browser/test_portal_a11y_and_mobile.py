"""Every existing portal page in Chromium, signed in with something to show (keys, usage, a
top-up, a token): at 390 px the page does not scroll sideways (a wide table scrolls inside
its own box); axe-core (vendored, evaluated through DevTools so the page's CSP still holds)
finds no critical or serious violation; a screenshot at 1280 and at 390 px goes to
pytest's temporary folder."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
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
    WIDE,
    accessibility_violations,
    describe,
)

pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True)]

EMAIL = "a.customer.with.a.rather.long.address@customers.example.com"

# Pages by name: (URL name, its arguments' names in Seeded, signed in?).
PAGES: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "sign-in": ("portal:login", (), False),
    "sign-up": ("portal:signup", (), False),
    "password-reset": ("portal:password_reset", (), False),
    "password-reset-sent": ("portal:password_reset_done", (), False),
    "password-reset-done": ("portal:password_reset_complete", (), False),
    "dashboard": ("portal:dashboard", (), True),
    "keys": ("portal:keys", (), True),
    "key-edit": ("portal:key_edit", ("key_id",), True),
    "key-revoke": ("portal:key_revoke", ("key_id",), True),
    "top-ups": ("portal:topups", (), True),
    "usage": ("portal:usage", (), True),
    "statement": ("portal:statement", (), True),
    "settings": ("portal:settings", (), True),
    "password-change": ("portal:password_change", (), True),
    "password-change-done": ("portal:password_change_done", (), True),
    "tokens": ("portal:tokens", (), True),
    "api-docs": ("api:docs", (), True),
}


@dataclass
class Seeded:
    key_id: int


def _seed() -> Seeded:
    from accounts.services import (
        api_key_create,
        api_key_touch,
        management_token_create,
        user_create,
    )
    from billing.models import UsageRecord
    from billing.services import price_set, wallet_credit

    user = user_create(email=EMAIL, password=PASSWORD)
    wallet_credit(user=user, amount_micros=25_000_000, kind="topup",
                  idempotency_key=f"voucher:{uuid.uuid4().hex}", memo="Voucher PYCON-2026")
    api_key = api_key_create(user=user, name="production backend, EU region", rpm=600,
                             allowed_models=["anthropic/claude-3-7-sonnet-20250219"]).api_key
    api_key_touch(api_key=api_key)
    api_key_create(user=user, name="")
    price = price_set(model="anthropic/claude-3-7-sonnet-20250219", input_usd_per_mtok="3",
                      output_usd_per_mtok="15", max_output_tokens=8192)
    now = timezone.now()
    for n in range(4):
        record = UsageRecord.objects.create(
            request_id=f"chatcmpl-{uuid.uuid4().hex}{n}", user=user, api_key=api_key,
            model=price.model, price=price, prompt_tokens=123_456, completion_tokens=7_890,
            cost_micros=488_718, latency_ms=12_345)
        UsageRecord.objects.filter(pk=record.pk).update(created_at=now - timedelta(days=n * 3))
    management_token_create(user=user, name="billing export script")
    return Seeded(key_id=api_key.pk)


@pytest.fixture
def seeded(site: Any, settings: Any) -> Seeded:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return in_thread(_seed)


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("portal-screenshots")


def _sign_in(page: Any) -> None:
    page.goto(reverse("portal:login"))
    page.locator("input[name=username]").fill(EMAIL)
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("form [type=submit]").click()
    page.wait_for_url(lambda url: "/login/" not in url)


def _page_overflow(page: Any) -> int:
    return page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth")


def _sticking_out(page: Any) -> list[str]:
    """The innermost elements past the window's right edge: what to fix when the page
    scrolls sideways."""
    return page.evaluate("""() => [...document.querySelectorAll("body *")]
        .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
        .filter(e => ![...e.children].some(c => c.getBoundingClientRect().right
                                                > document.documentElement.clientWidth + 1))
        .filter(e => !e.closest(".table-wrap, pre, .visually-hidden"))
        .slice(0, 5).map(e => e.tagName.toLowerCase() + "." + e.className + " " +
                              (e.textContent || "").trim().slice(0, 40))""")


def _tables_not_in_a_scroll_box(page: Any) -> list[str]:
    """Tables wider than their box whose box does not scroll (their columns would be cut)."""
    return page.evaluate("""() => [...document.querySelectorAll("main table")]
        .filter(t => !t.closest(".visually-hidden"))
        .filter(t => {
            const box = t.parentElement;
            return t.scrollWidth > box.clientWidth + 1
                && getComputedStyle(box).overflowX !== "auto";
        }).map(t => t.dataset.testid || t.className)""")


def _check(page: Any, name: str, screenshots: Path) -> list[str]:
    problems = []
    if name == "api-docs":
        expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    else:
        expect(page.locator("main h1")).to_be_visible()
    page.screenshot(path=str(screenshots / f"{name}-{WIDE}.png"), full_page=True)
    bad = [v for v in accessibility_violations(page) if v["impact"] in FORBIDDEN_IMPACTS]
    if bad:
        problems.append(f"accessibility violations at {WIDE} px: {describe(bad)}")
    page.set_viewport_size({"width": NARROW, "height": 900})
    page.screenshot(path=str(screenshots / f"{name}-{NARROW}.png"), full_page=True)
    if (overflow := _page_overflow(page)) > 0:
        problems.append(f"the page scrolls sideways at {NARROW} px by {overflow} px: "
                        f"{_sticking_out(page)}")
    if cut := _tables_not_in_a_scroll_box(page):
        problems.append(f"tables cut at {NARROW} px: {cut}")
    bad = [v for v in accessibility_violations(page) if v["impact"] in FORBIDDEN_IMPACTS]
    if bad:
        problems.append(f"accessibility violations at {NARROW} px: {describe(bad)}")
    for width in (WIDE, NARROW):
        assert (screenshots / f"{name}-{width}.png").stat().st_size > 5_000
    return problems


@pytest.mark.parametrize("name", PAGES)
def test_a_portal_page_fits_a_phone_and_is_accessible(
        name: str, seeded: Seeded, page: Any, screenshots: Path) -> None:
    url_name, arg_names, signed_in = PAGES[name]
    if signed_in:
        _sign_in(page)
    page.goto(reverse(url_name, args=[getattr(seeded, arg) for arg in arg_names]))
    problems = _check(page, name, screenshots)
    assert not problems, "\n".join(problems)


def test_a_new_key_page_and_a_flash_message_fit_and_are_accessible(
        seeded: Seeded, page: Any, screenshots: Path) -> None:
    _sign_in(page)
    page.goto(reverse("portal:keys"))
    page.locator("input[name=name]").fill("staging")
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_test_id("new-secret")).to_be_visible()
    problems = _check(page, "key-created", screenshots)
    assert not problems, "\n".join(problems)

    page.goto(reverse("portal:tokens"))
    page.locator(".actions button").first.click()  # revoking says so in a message
    expect(page.locator(".messages li").first).to_be_visible()
    problems = _check(page, "flash-message", screenshots)
    assert not problems, "\n".join(problems)


def test_charts_have_their_figures_as_text_and_help_text_is_tied_to_its_field(
        seeded: Seeded, page: Any) -> None:
    _sign_in(page)
    page.goto(reverse("portal:usage"))
    table = page.get_by_test_id("spend-chart-table")
    today = timezone.now().strftime("%Y-%m-%d")
    expect(table.locator("tbody tr").last).to_contain_text(today)
    expect(table.locator("tbody tr").last).to_contain_text("$0.488718")
    page.goto(reverse("portal:keys"))
    described = page.locator("#id_allowed_models").get_attribute("aria-describedby")
    expect(page.locator(f"#{described}")).to_contain_text("Model names")
    # The skip link goes to the content.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
