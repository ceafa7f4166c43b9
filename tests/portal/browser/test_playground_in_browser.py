"""The playground in a real browser against the whole router (portal and /v1 on one port):
a streamed answer shows its tokens and exact cost, and a slow answer stopped midway is
recorded as cancelled and charged exactly what the ledger took."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from accounts.models import User
from billing.models import LedgerEntry, UsageRecord
from billing.money import format_usd
from billing.services import price_set, wallet_credit
from proxy.models import Worker, WorkerModel
from tests.live_router import LiveRouter
from tests.portal.browser.conftest import ARTIFACTS, MODEL, in_thread, needs_chromium
from tests.portal.conftest import PASSWORD
from tests.proxy.upstream import UpstreamServer
from tests.router_admin.browser.conftest import (
    FORBIDDEN_IMPACTS,
    accessibility_violations,
    describe,
)

pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True)]

EMAIL = "player@example.com"
SLOW_MODEL = "slow-gpt"
LONG_REPLY = " ".join(f"word{n}" for n in range(400))


@pytest.fixture
def player(make_user) -> User:
    user = make_user(email=EMAIL, password=PASSWORD)
    wallet_credit(user=user, amount_micros=5_000_000, idempotency_key="fund-player",
                  memo="test", kind="topup")
    return user


@pytest.fixture
def slow_model(transactional_db) -> Iterator[UpstreamServer]:
    """``slow-gpt``: a long answer, one token every 50 ms, from a local upstream."""
    from proxy.ground.cache import clear_all_caches

    with UpstreamServer(reply=LONG_REPLY, chunk_delay=0.05) as server:
        price_set(model=SLOW_MODEL, input_usd_per_mtok="1", output_usd_per_mtok="3")
        worker = Worker(name="slow", kind="openai", base_url=server.base_url)
        worker.set_api_key("upstream-secret")
        worker.save()
        WorkerModel.objects.create(worker=worker, model=SLOW_MODEL,
                                   upstream_model="gpt-4o-mini")
        clear_all_caches()
        yield server


def _records() -> list[UsageRecord]:
    return list(UsageRecord.objects.filter(user__email=EMAIL).select_related("api_key")
                .order_by("created_at"))


def _charge_of(record: UsageRecord) -> int:
    return -LedgerEntry.objects.get(hold_id=record.request_id, kind="charge").amount_micros


def _no_serious_violations(page: Page) -> None:
    bad = [v for v in accessibility_violations(page) if v["impact"] in FORBIDDEN_IMPACTS]
    assert not bad, describe(bad)


def test_a_streamed_chat_shows_its_cost_and_a_stopped_one_is_charged_what_it_produced(
        mock_model: None, slow_model: UpstreamServer, player: User, page: Page,
        site: LiveRouter) -> None:
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
    [first] = in_thread(_records)
    assert first.api_key is not None
    assert first.api_key.playground
    assert first.status == UsageRecord.Status.OK
    expect(answer.get_by_test_id("answer-meta")).to_have_text(
        f"{first.prompt_tokens} prompt + {first.completion_tokens} completion tokens"
        f" · cost ${format_usd(first.cost_micros)}")
    assert in_thread(_charge_of, first) == first.cost_micros
    secret_prefix = first.api_key.prefix
    assert secret_prefix not in page.content()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)

    # A long answer, stopped after a few words: cancelled, charged for what was produced.
    page.get_by_label("Model").select_option(SLOW_MODEL)
    page.get_by_label("Max tokens").fill("2000")
    page.get_by_label("Message").fill("Tell me a long story")
    page.get_by_role("button", name="Send").click()
    slow = page.locator(".pg-turn[data-role=assistant]").nth(1)
    expect(slow).to_contain_text("word5")
    page.get_by_role("button", name="Stop").click()
    expect(slow.get_by_test_id("answer-meta")).to_contain_text("Stopped")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    in_thread(site.drain)
    records = in_thread(_records)
    assert len(records) == 2
    stopped = records[1]
    assert stopped.model == SLOW_MODEL
    assert stopped.status == UsageRecord.Status.CANCELLED
    assert stopped.api_key is not None
    assert stopped.api_key.playground
    assert 0 < stopped.completion_tokens < 400
    assert stopped.cost_micros > 0
    assert in_thread(_charge_of, stopped) == stopped.cost_micros
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(ARTIFACTS / "playground-390.png"), full_page=True)
    _no_serious_violations(page)

    # The Models page lists what the playground called, at its price per 1M tokens.
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_role("navigation").get_by_role("link", name="Models").click()
    row = page.locator(f"[data-testid=model-row][data-model='{SLOW_MODEL}']")
    expect(row.get_by_test_id("price-input")).to_contain_text("1")
    _no_serious_violations(page)

    # The stopped request's page, reached from the usage list: its charge is the ledger's.
    page.get_by_role("navigation").get_by_role("link", name="Usage").click()
    page.locator(f"a[href$='/usage/{stopped.request_id}/']").click()
    expect(page.get_by_test_id("request-id")).to_have_text(stopped.request_id)
    expect(page.get_by_test_id("status")).to_have_text("Client disconnected")
    expect(page.get_by_test_id("charged")).to_have_text(
        f"${format_usd(in_thread(_charge_of, stopped))}")
    page.screenshot(path=str(ARTIFACTS / "request-page.png"), full_page=True)
    _no_serious_violations(page)
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(ARTIFACTS / "request-page-390.png"), full_page=True)

    # Signing out revokes the playground key.
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{site.url}/login/")
    assert in_thread(lambda: first.api_key.__class__.objects.get(
        pk=first.api_key.pk).status) == "revoked"
