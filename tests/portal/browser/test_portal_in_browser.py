"""The portal in a real browser, end to end: a stranger signs up, adds money with a voucher,
creates a key, calls the API with it through the openai SDK, sees the calls in the usage
chart, table and CSV, and revokes the key, after which the API refuses it."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime, timedelta

import openai
import pytest
from django.db.models import Sum
from playwright.sync_api import Page, expect

from billing.models import UsageRecord
from billing.services.vouchers import voucher_batch_create
from tests.live_router import LiveRouter
from tests.portal.browser.conftest import ARTIFACTS, MODEL, in_thread, needs_chromium
from tests.portal.conftest import PASSWORD

pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True)]

EMAIL = "browser.user@example.com"
# Longer than this test takes (about 20 s here) with room for a slow machine: it must not
# straddle a UTC midnight, or its requests would fall on two days of the dashboard's and
# the usage charts' "today".
TEST_SPAN = timedelta(minutes=3)


@pytest.fixture
def voucher_code(transactional_db) -> str:
    [code] = voucher_batch_create(amount_micros=5_000_000, count=1, memo="browser test")
    return code


def _spent_micros() -> int:
    return UsageRecord.objects.filter(user__email=EMAIL).aggregate(
        total=Sum("cost_micros"))["total"]


def _usd(micros: int) -> str:
    from portal.templatetags.portal_tags import usd

    return usd(micros)


def _ask(client: openai.OpenAI, text: str) -> str:
    reply = client.chat.completions.create(model=MODEL,
                                           messages=[{"role": "user", "content": text}])
    return reply.choices[0].message.content or ""


def _refusal_within(client: openai.OpenAI, *, seconds: float) -> openai.AuthenticationError:
    """The API's refusal of the client's key, waiting for it: each router caches a key for
    ROUTER_LOOKUP_TTL_SECONDS (5 s) after its last lookup."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            _ask(client, "Still there?")
        except openai.AuthenticationError as refusal:
            return refusal
        time.sleep(0.25)
    pytest.fail(f"the revoked key was still accepted after {seconds} s")


def _clear_of_midnight(span: timedelta, now: datetime | None = None) -> float:
    """Seconds to wait so that ``span`` from then on lies within one UTC day: 0 unless the
    next midnight comes sooner than that, then until just past it."""
    now = now or datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return 0.0 if midnight - now > span else (midnight - now).total_seconds() + 1.0


def test_the_wait_for_midnight_is_only_near_it() -> None:
    noon = datetime(2026, 12, 7, 12, tzinfo=UTC)
    assert _clear_of_midnight(TEST_SPAN, noon) == 0.0
    before = datetime(2026, 12, 7, 23, 58, 30, tzinfo=UTC)
    assert _clear_of_midnight(TEST_SPAN, before) == 91.0
    assert _clear_of_midnight(TEST_SPAN, datetime(2026, 12, 8, tzinfo=UTC)) == 0.0


def test_sign_up_top_up_create_a_key_call_the_api_see_usage_and_revoke(
        mock_model: None, voucher_code: str, page: Page, site: LiveRouter) -> None:
    time.sleep(_clear_of_midnight(TEST_SPAN))
    # Sign up: straight to an empty dashboard.
    page.goto("/signup/")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(f"{site.url}/")
    expect(page.get_by_test_id("available-balance")).to_have_text("$0.000000")
    expect(page.get_by_test_id("base-url")).to_have_text(site.base_url)

    # Redeem a voucher: the balance changes at once.
    page.get_by_role("navigation").get_by_role("link", name="Top up").click()
    expect(page.get_by_test_id("card-topups-off")).to_be_visible()
    page.get_by_label("Code").fill(voucher_code)
    page.get_by_role("button", name="Redeem").click()
    expect(page.get_by_role("status").first).to_contain_text(
        "Voucher redeemed: $5.000000 was added to your balance.")
    expect(page.get_by_test_id("available-balance")).to_have_text("$5.000000")
    expect(page.get_by_test_id("credits-table")).to_contain_text("Voucher")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "topups.png"), full_page=True)

    # Create a key: its secret is shown once, and the copy button copies it.
    page.get_by_role("navigation").get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("browser key")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_test_id("new-secret").inner_text().strip()
    assert secret.startswith("sk-br-")
    copy = page.locator("button.copy[data-copy-from=new-secret]")
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    page.get_by_role("link", name="I have copied it").click()
    expect(page.get_by_test_id("keys-table")).to_contain_text("browser key")
    expect(page.get_by_test_id("keys-table")).to_contain_text(secret[:18])  # its prefix
    assert secret not in page.content()
    page.screenshot(path=str(ARTIFACTS / "keys.png"), full_page=True)

    # The key works against /v1 with the openai SDK.
    client = openai.OpenAI(base_url=site.base_url, api_key=secret, max_retries=0, timeout=20)
    assert "You said: Hello from a real browser test" in _ask(
        client, "Hello from a real browser test")
    _ask(client, "A second question")
    _ask(client, "And a third one")
    in_thread(site.drain)  # the settlements reach the database
    spent = in_thread(_spent_micros)
    assert spent > 0

    # The dashboard shows what was spent, and what is left.
    page.get_by_role("navigation").get_by_role("link", name="Dashboard").click()
    expect(page.get_by_test_id("spent-today")).to_have_text(_usd(spent))
    expect(page.get_by_test_id("available-balance")).to_have_text(_usd(5_000_000 - spent))
    expect(page.get_by_text("3 requests since 00:00 UTC")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # Usage: today's bar in both charts, the model's row, three requests in the table.
    page.get_by_role("navigation").get_by_role("link", name="Usage").click()
    expect(page.get_by_test_id("spend-chart").locator("rect.bar")).to_have_count(1)
    expect(page.get_by_test_id("tokens-chart").locator("rect.bar")).to_have_count(2)
    expect(page.get_by_test_id("by-model-table")).to_contain_text(MODEL)
    rows = page.get_by_test_id("requests-table").locator("tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text(secret[:18])
    page.screenshot(path=str(ARTIFACTS / "usage.png"), full_page=True)

    # The CSV export downloads the same three requests.
    with page.expect_download() as download:
        page.get_by_test_id("csv-link").click()
    body = download.value.path().read_text()
    records = list(csv.DictReader(io.StringIO(body)))
    assert len(records) == 3
    assert {record["model"] for record in records} == {MODEL}
    assert {record["api_key"] for record in records} == {secret[:18]}

    # Revoke the key (after a confirmation); within seconds the API refuses it.
    page.get_by_role("navigation").get_by_role("link", name="API keys").click()
    page.get_by_test_id("keys-table").get_by_role("link", name="Revoke").click()
    page.get_by_role("button", name="Revoke the key").click()
    expect(page.get_by_role("status").first).to_contain_text("Revoked the key")
    expect(page.get_by_test_id("keys-table")).to_contain_text("revoked")
    refused = _refusal_within(client, seconds=8)
    assert refused.status_code == 401
    assert refused.body["code"] == "invalid_api_key"

    # Signing out ends the session.
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{site.url}/login/")
    page.goto("/keys/")
    expect(page).to_have_url(f"{site.url}/login/?next=/keys/")
