"""Every existing portal page in Chromium, signed in with something to show (keys, usage, a
top-up, a token): at 390 px the page does not scroll sideways (a wide table scrolls inside
its own box); axe-core (vendored, evaluated through DevTools so the page's CSP still holds)
finds no critical or serious violation; a screenshot at 1280 and at 390 px goes to
pytest's temporary folder."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from tests.portal.browser.conftest import check_page, in_thread, needs_chromium
from tests.portal.conftest import PASSWORD

# One seeded state for the module (see shared_site): the page checks only read it, and the
# one test that writes (a new key, a revoked token) does so as a customer of its own.
pytestmark = [needs_chromium, pytest.mark.django_db]

EMAIL = "a.customer.with.a.rather.long.address@customers.example.com"
WRITER = "another.customer.with.a.rather.long.address@customers.example.com"

# The checks now live in the conftest (the new user's walk makes them too); under their old
# name here for tests/portal/organizations/test_pages_in_browser.py, which imports it.
_check = check_page

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
    day: str  # the UTC day (YYYY-MM-DD) of the newest seeded usage


def _seed_customer(email: str, price: Any, now: datetime) -> int:
    """A customer with a top-up, two keys (one used), usage over the nine days up to ``now``
    and a token; returns the used key's id."""
    from accounts.services import (
        api_key_create,
        api_key_touch,
        management_token_create,
        user_create,
    )
    from billing.models import UsageRecord
    from billing.services import wallet_credit

    user = user_create(email=email, password=PASSWORD)
    wallet_credit(user=user, amount_micros=25_000_000, kind="topup",
                  idempotency_key=f"voucher:{uuid.uuid4().hex}", memo="Voucher PYCON-2026")
    api_key = api_key_create(user=user, name="production backend, EU region", rpm=600,
                             allowed_models=[price.model]).api_key
    api_key_touch(api_key=api_key)
    api_key_create(user=user, name="")
    for n in range(4):
        record = UsageRecord.objects.create(
            request_id=f"chatcmpl-{uuid.uuid4().hex}{n}", user=user, api_key=api_key,
            model=price.model, price=price, prompt_tokens=123_456, completion_tokens=7_890,
            cost_micros=488_718, latency_ms=12_345)
        UsageRecord.objects.filter(pk=record.pk).update(created_at=now - timedelta(days=n * 3))
    management_token_create(user=user, name="billing export script")
    return api_key.pk


def _seed() -> Seeded:
    from billing.services import price_set

    price = price_set(model="anthropic/claude-3-7-sonnet-20250219", input_usd_per_mtok="3",
                      output_usd_per_mtok="15", max_output_tokens=8192)
    from billing.services.rollups import usage_rollup

    now = timezone.now()
    _seed_customer(WRITER, price, now)
    seeded = Seeded(key_id=_seed_customer(EMAIL, price, now), day=f"{now:%Y-%m-%d}")
    # Days before today are read from the roll-ups, as the beat job keeps them: the seeded
    # day still shows its spend once a UTC midnight has passed.
    usage_rollup(since=now - timedelta(days=10), until=now)
    return seeded


@pytest.fixture(scope="module")
def seeded(shared_site: Any) -> Seeded:
    return in_thread(_seed)


@pytest.fixture
def page(seeded: Seeded, shared_page: Any) -> Any:
    """A fresh page (cookies of its own) over the module's seeded state."""
    return shared_page


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("portal-screenshots")


def _sign_in(page: Any, email: str = EMAIL) -> None:
    page.goto(reverse("portal:login"))
    page.locator("input[name=username]").fill(email)
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("form [type=submit]").click()
    page.wait_for_url(lambda url: "/login/" not in url)


@pytest.mark.parametrize("name", PAGES)
def test_a_portal_page_fits_a_phone_and_is_accessible(
        name: str, seeded: Seeded, page: Any, screenshots: Path) -> None:
    url_name, arg_names, signed_in = PAGES[name]
    if signed_in:
        _sign_in(page)
    page.goto(reverse(url_name, args=[getattr(seeded, arg) for arg in arg_names]))
    problems = check_page(page, name, screenshots)
    assert not problems, "\n".join(problems)


def test_a_new_key_page_and_a_flash_message_fit_and_are_accessible(
        page: Any, screenshots: Path) -> None:
    _sign_in(page, WRITER)  # the customer whose keys and tokens may change
    page.goto(reverse("portal:keys"))
    page.locator("input[name=name]").fill("staging")
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_test_id("new-secret")).to_be_visible()
    problems = check_page(page, "key-created", screenshots)
    assert not problems, "\n".join(problems)

    page.goto(reverse("portal:tokens"))
    page.locator(".actions button").first.click()  # revoking says so in a message
    expect(page.locator(".messages li").first).to_be_visible()
    problems = check_page(page, "flash-message", screenshots)
    assert not problems, "\n".join(problems)


def test_charts_have_their_figures_as_text_and_help_text_is_tied_to_its_field(
        seeded: Seeded, page: Any) -> None:
    _sign_in(page)
    page.goto(reverse("portal:usage"))
    table = page.get_by_test_id("spend-chart-table")
    # The row of the day the usage was seeded on, not today's: the module's page checks run
    # between the seeding and this test, long enough for a UTC midnight to pass in between
    # (today's row would then be empty).
    expect(table.locator("tbody tr").filter(has_text=seeded.day)).to_contain_text("$0.488718")
    page.goto(reverse("portal:keys"))
    described = page.locator("#id_allowed_models").get_attribute("aria-describedby")
    expect(page.locator(f"#{described}")).to_contain_text("Model names")
    # The skip link goes to the content.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
