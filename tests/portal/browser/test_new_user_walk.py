"""A brand-new user's first visit, in Chromium against the whole router (portal and /v1 on
one port): sign up, redeem a voucher, look at the Models page, chat in the playground and
stop a streamed answer midway, then open that request's page from the usage list, where
the charge shown is, to the micro-USD, the ledger's entry for it. Every page on the way is
photographed at 1280 and 390 px (pytest's temporary folder), does not scroll sideways at
390 px, and has no critical or serious axe-core violation at either width."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from billing.models import LedgerEntry, UsageRecord
from billing.money import format_usd
from billing.services import price_set
from billing.services.vouchers import voucher_batch_create
from proxy.models import Worker, WorkerModel
from tests.live_router import LiveRouter
from tests.portal.browser.conftest import MODEL, check_page, in_thread, needs_chromium
from tests.portal.conftest import PASSWORD
from tests.proxy.upstream import UpstreamServer

pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True)]

# A long address, as real ones can be: the header shows it, and at 390 px it must wrap.
EMAIL = "a.brand.new.customer.with.a.long.address@newcomers.example.com"
SLOW_MODEL = "slow-gpt"
LONG_REPLY = " ".join(f"word{n}" for n in range(400))


@pytest.fixture
def voucher_code(transactional_db) -> str:
    [code] = voucher_batch_create(amount_micros=5_000_000, count=1, memo="welcome voucher")
    return code


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


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where the screenshots go: pytest's temporary folder, never the repository."""
    return tmp_path


def _records() -> list[UsageRecord]:
    return list(UsageRecord.objects.filter(user__email=EMAIL).select_related("api_key")
                .order_by("created_at"))


def _ledger_charge(request_id: str) -> int:
    """What the ledger took for the request, in micro-USD (its charge entry is negative)."""
    return -LedgerEntry.objects.get(wallet__user__email=EMAIL, hold_id=request_id,
                                    kind="charge").amount_micros


def _look(page: Page, name: str, screenshots: Path) -> None:
    problems = check_page(page, name, screenshots)
    assert not problems, f"{name}:\n" + "\n".join(problems)


def test_a_new_user_signs_up_tops_up_chats_stops_and_finds_the_exact_charge(
        mock_model: None, slow_model: UpstreamServer, voucher_code: str, page: Page,
        site: LiveRouter, screenshots: Path) -> None:
    nav = page.get_by_role("navigation", name="Main")

    # Sign up through the form: straight to an empty dashboard.
    page.goto("/signup/")
    _look(page, "sign-up", screenshots)
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(f"{site.url}/")
    expect(page.get_by_test_id("available-balance")).to_have_text("$0.000000")
    _look(page, "dashboard", screenshots)

    # Redeem the voucher: the balance changes at once.
    nav.get_by_role("link", name="Top up").click()
    page.get_by_label("Code").fill(voucher_code)
    page.get_by_role("button", name="Redeem").click()
    expect(page.get_by_role("status").first).to_contain_text(
        "Voucher redeemed: $5.000000 was added to your balance.")
    expect(page.get_by_test_id("available-balance")).to_have_text("$5.000000")
    _look(page, "top-ups", screenshots)

    # The Models page: both models the router serves, at their prices per 1M tokens.
    nav.get_by_role("link", name="Models").click()
    for model, input_price, output_price in ((MODEL, "$1.00", "$1.00"),
                                             (SLOW_MODEL, "$1.00", "$3.00")):
        row = page.locator(f"[data-testid=model-row][data-model='{model}']")
        expect(row.get_by_test_id("price-input")).to_have_text(input_price)
        expect(row.get_by_test_id("price-output")).to_have_text(output_price)
        expect(row.get_by_test_id("allowed")).to_have_text("allowed")
    _look(page, "models", screenshots)

    # The playground: a long streamed answer, stopped after a few words.
    nav.get_by_role("link", name="Playground").click()
    page.get_by_label("Model").select_option(SLOW_MODEL)
    page.get_by_label("Max tokens").fill("2000")
    page.get_by_label("Message").fill("Tell me a long story")
    page.get_by_role("button", name="Send").click()
    answer = page.locator(".pg-turn[data-role=assistant]").first
    expect(answer).to_contain_text("word5")
    page.get_by_role("button", name="Stop").click()
    expect(answer.get_by_test_id("answer-meta")).to_contain_text("Stopped")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    in_thread(site.drain)  # the stopped request settles a moment after the client goes
    [stopped] = in_thread(_records)
    assert stopped.model == SLOW_MODEL
    assert stopped.status == UsageRecord.Status.CANCELLED
    assert stopped.api_key is not None
    assert stopped.api_key.playground
    assert 0 < stopped.completion_tokens < 400  # what was produced, not the whole answer
    assert stopped.cost_micros > 0
    _look(page, "playground", screenshots)

    # The usage list has the request, with a link to its own page.
    nav.get_by_role("link", name="Usage").click()
    rows = page.get_by_test_id("requests-table").locator("tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(SLOW_MODEL)
    expect(rows.first).to_contain_text("playground")
    _look(page, "usage", screenshots)
    rows.first.get_by_test_id("request-link").click()

    # The request's page: the charge shown is exactly what the ledger took for it.
    expect(page).to_have_url(f"{site.url}/usage/{stopped.request_id}/")
    expect(page.get_by_test_id("request-id")).to_have_text(stopped.request_id)
    expect(page.get_by_test_id("status")).to_have_text("Client disconnected")
    ledger_micros = in_thread(_ledger_charge, stopped.request_id)
    assert ledger_micros == stopped.cost_micros
    charged = page.get_by_test_id("charged")
    expect(charged).to_have_attribute("title", f"{ledger_micros} micro-USD")
    expect(charged).to_have_text(f"${format_usd(ledger_micros)}")
    _look(page, "request", screenshots)
