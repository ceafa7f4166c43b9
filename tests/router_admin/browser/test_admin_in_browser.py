"""The admin as staff see it in Chromium, page by page (the dashboard, the list pages, a
user's page): at 1280 px nothing overflows, neither the page nor a list's table (whose
columns would otherwise be hidden in its scroll box); at 390 px only the table scrolls, in
its own box; axe-core finds no critical or serious accessibility violation; and a
screenshot at each width is saved in pytest's temporary folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from tests.portal.browser.conftest import needs_chromium
from tests.router_admin.browser.conftest import (
    FORBIDDEN_IMPACTS,
    NARROW,
    PAGES,
    WIDE,
    Seeded,
    accessibility_violations,
    describe,
    overflow,
)

# One seeded state for the module (see the conftest's seeded): the tests only look at it.
pytestmark = [needs_chromium, pytest.mark.django_db]


def _check(page: Any, name: str, screenshots: Path) -> list[str]:
    """What is wrong with the page now open, at both widths (empty: nothing)."""
    problems = []
    expect(page.locator("#content")).to_be_visible()
    is_list = page.locator("#result_list").count() > 0
    if is_list:
        expect(page.locator("#result_list tbody tr").first).to_be_visible()
    page.screenshot(path=str(screenshots / f"{name}-{WIDE}.png"), full_page=True)
    wide = overflow(page)
    if wide["page"] > 0 or wide["table"] > 0:
        problems.append(f"overflows at {WIDE} px by {wide}")
    bad = [v for v in accessibility_violations(page) if v["impact"] in FORBIDDEN_IMPACTS]
    if bad:
        problems.append(f"accessibility violations: {describe(bad)}")

    page.set_viewport_size({"width": NARROW, "height": 900})
    page.screenshot(path=str(screenshots / f"{name}-{NARROW}.png"), full_page=True)
    if is_list:
        # A table wider than a phone scrolls inside its own box; the page does not.
        results = page.locator("#changelist-form .results")
        if results.evaluate("e => getComputedStyle(e).overflowX") != "auto":
            problems.append(f"the table does not scroll in its box at {NARROW} px")
        if overflow(page)["page"] > 0:
            problems.append(f"the page overflows at {NARROW} px by {overflow(page)}")
    for width in (WIDE, NARROW):
        assert (screenshots / f"{name}-{width}.png").stat().st_size > 5_000
    return problems


@pytest.mark.parametrize("name", PAGES)
def test_a_page_fits_is_accessible_and_is_photographed(
        name: str, staff_page: Any, screenshots: Path) -> None:
    staff_page.goto(reverse(PAGES[name]))
    problems = _check(staff_page, name, screenshots)
    assert not problems, "\n".join(problems)


def test_the_user_page_fits_is_accessible_and_is_photographed(
        staff_page: Any, seeded: Seeded, screenshots: Path) -> None:
    staff_page.goto(reverse("admin:accounts_user_change", args=[seeded.member_id]))
    expect(staff_page.locator("#user_form")).to_be_visible()
    problems = _check(staff_page, "user", screenshots)
    assert not problems, "\n".join(problems)


def test_the_theme_brands_the_header_and_right_aligns_money(staff_page: Any) -> None:
    expect(staff_page.locator("#site-name")).to_have_text("Binom Router")
    # The theme's stylesheet is loaded (a static file: the policy allows no inline style).
    expect(staff_page.locator("#header")).to_have_css("background-color", "rgb(31, 58, 95)")
    staff_page.goto(reverse("admin:billing_ledgerentry_changelist"))
    cell = staff_page.locator("#result_list td.field-amount_usd").first
    expect(cell).to_have_css("text-align", "right")
    expect(cell).to_have_css("font-variant-numeric", "tabular-nums")
