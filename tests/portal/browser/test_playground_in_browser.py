"""The playground in a real browser against the whole router (portal and /v1 on one port):
a streamed answer shows its tokens and exact cost, charged through a playground key that
never reaches the page and is revoked on sign-out. A stopped answer, the Models page and a
request's page are in the new user's walk (test_new_user_walk.py)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from accounts.models import ApiKey, User
from billing.models import LedgerEntry, UsageRecord
from billing.money import format_usd
from billing.services import wallet_credit
from tests.live_router import LiveRouter
from tests.portal.browser.conftest import ARTIFACTS, MODEL, in_thread, needs_chromium
from tests.portal.conftest import PASSWORD

pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True)]

EMAIL = "player@example.com"


@pytest.fixture
def player(make_user) -> User:
    user = make_user(email=EMAIL, password=PASSWORD)
    wallet_credit(user=user, amount_micros=5_000_000, idempotency_key="fund-player",
                  memo="test", kind="topup")
    return user


def _records() -> list[UsageRecord]:
    return list(UsageRecord.objects.filter(user__email=EMAIL).select_related("api_key")
                .order_by("created_at"))


def _charge_of(record: UsageRecord) -> int:
    return -LedgerEntry.objects.get(hold_id=record.request_id, kind="charge").amount_micros


def test_a_streamed_chat_shows_its_tokens_and_cost_through_a_key_revoked_on_sign_out(
        mock_model: None, player: User, page: Page, site: LiveRouter) -> None:
    page.goto("/login/")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto("/playground/")

    # A streamed answer from the mock model, then its tokens and exact cost.
    page.get_by_label("Model").select_option(MODEL)
    page.get_by_label("System prompt").fill("Be brief.")
    page.get_by_label("Message").fill("Hello from the playground")
    page.get_by_role("button", name="Send").click()
    answer = page.locator(".pg-turn[data-role=assistant]").first
    expect(answer).to_contain_text("You said: Hello from the playground")
    expect(answer.get_by_test_id("answer-meta")).to_contain_text("completion tokens · cost $")
    in_thread(site.drain)
    [record] = in_thread(_records)
    assert record.api_key is not None
    assert record.api_key.playground
    assert record.status == UsageRecord.Status.OK
    expect(answer.get_by_test_id("answer-meta")).to_have_text(
        f"{record.prompt_tokens} prompt + {record.completion_tokens} completion tokens"
        f" · cost ${format_usd(record.cost_micros)}")
    assert in_thread(_charge_of, record) == record.cost_micros
    assert record.api_key.prefix not in page.content()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)

    # Signing out revokes the playground key.
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{site.url}/login/")
    assert in_thread(lambda: ApiKey.objects.get(pk=record.api_key.pk).status) == "revoked"
