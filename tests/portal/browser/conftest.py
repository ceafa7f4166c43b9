"""A real Chromium (Debian's, at /usr/bin/chromium) driven by Playwright against the whole
router served by uvicorn: the portal's pages and the /v1 API on one port.

Two ways to use it. A test that calls /v1 (whose holds must settle before its rows go)
takes ``site`` and ``page`` and is marked ``django_db(transaction=True)``: the database is
emptied after it. A module whose tests make no /v1 call and only look at one seeded state
(or each write only rows of their own) takes ``shared_site`` and ``shared_page`` and is
marked plain ``django_db``: it seeds once (a module-scoped fixture of its own, through
``in_thread``), and the database is emptied once, when the module ends, instead of after
every test. Either way each test has a Chromium of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connections
from django.test import override_settings

from tests.live_router import LiveRouter, flush_redis

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}: `apt-get install chromium` "
    "(CI installs it, so these tests run there)")
ARTIFACTS = Path(django_settings.BASE_DIR) / "var" / "test-artifacts"
MODEL = "mock-gpt"  # the shared mock_model fixture
T = TypeVar("T")


def in_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a database call beside the browser. Playwright's sync API keeps an event loop
    running in the test's thread, where Django refuses synchronous ORM calls; another
    thread has its own connection and sees what the live router committed."""
    def run() -> T:
        try:
            return function(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result(timeout=60)


@pytest.fixture
def site(router: LiveRouter, settings) -> LiveRouter:
    # The suite runs with DEBUG off, as production does: cookies are Secure there, and the
    # browser talks plain http to 127.0.0.1.
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    return router


@contextmanager
def _chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def _fresh_page(browser: Any, site: LiveRouter) -> Iterator[Any]:
    """A page in a context of its own (no cookies, no storage), 1280 x 900."""
    context = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def page(site: LiveRouter) -> Iterator[Any]:
    """A fresh browser page at the live router. Set up after (and so torn down before) the
    database fixtures, whose teardown would otherwise run inside Playwright's event loop."""
    with _chromium() as browser, _fresh_page(browser, site) as page:
        yield page


def _empty_the_database() -> None:
    """What a transactional test's teardown does: every table emptied (and what
    post_migrate makes, such as content types, made again)."""
    call_command("flush", verbosity=0, interactive=False)


@pytest.fixture(scope="module")
def shared_site(request: pytest.FixtureRequest, live_router: LiveRouter,
                django_db_blocker: Any) -> Iterator[LiveRouter]:
    """The live router over one database state for the whole module, emptied when the
    module ends. Open to the module's fixtures; the module is marked plain ``django_db``
    (which is also what makes pytest-django create the test database when only such tests
    run): each test's transaction on its own connection, which writes nothing, is rolled
    back, and what the seed, the router and ``in_thread`` committed stays for the next
    test. Cookies without Secure (see ``site``) and a fast password hasher for the users
    the module seeds."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None or marker.kwargs.get("transaction") or marker.args:
        # Without the mark the database emptied at the end could be the configured one,
        # not the test database; with transaction=True the seed would go after one test.
        raise pytest.UsageError(f"{request.node.name} uses shared_site: mark it "
                                "`pytestmark = pytest.mark.django_db` (not transactional)")
    flush_redis()  # limits and breaker state that earlier tests left
    changed = override_settings(SESSION_COOKIE_SECURE=False, CSRF_COOKIE_SECURE=False)
    with changed, django_db_blocker.unblock():
        try:
            yield live_router
        finally:
            # No /v1 call was made here, so nothing is left to settle but what a module
            # seeded on purpose (the admin's pending hold, which never settles): empty the
            # database first, and the drain has nothing to wait for.
            in_thread(_empty_the_database)
            live_router.drain()


@pytest.fixture
def shared_page(shared_site: LiveRouter) -> Iterator[Any]:
    """A fresh browser page over the module's shared state (set up after, and so torn down
    before, the test's database transaction, which must not end inside Playwright's event
    loop)."""
    with _chromium() as browser, _fresh_page(browser, shared_site) as page:
        yield page


def page_overflow(page: Any) -> int:
    """By how many pixels the document is wider than the window (0: it does not scroll
    sideways)."""
    return page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth")


def sticking_out(page: Any) -> list[str]:
    """The innermost elements past the window's right edge: what to fix when the page
    scrolls sideways."""
    return page.evaluate("""() => [...document.querySelectorAll("body *")]
        .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
        .filter(e => ![...e.children].some(c => c.getBoundingClientRect().right
                                                > document.documentElement.clientWidth + 1))
        .filter(e => !e.closest(".table-wrap, pre, .visually-hidden"))
        .slice(0, 5).map(e => e.tagName.toLowerCase() + "." + e.className + " " +
                              (e.textContent || "").trim().slice(0, 40))""")


def tables_not_in_a_scroll_box(page: Any) -> list[str]:
    """Tables wider than their box whose box does not scroll (their columns would be cut)."""
    return page.evaluate("""() => [...document.querySelectorAll("main table")]
        .filter(t => !t.closest(".visually-hidden"))
        .filter(t => {
            const box = t.parentElement;
            return t.scrollWidth > box.clientWidth + 1
                && getComputedStyle(box).overflowX !== "auto";
        }).map(t => t.dataset.testid || t.className)""")


def check_page(page: Any, name: str, screenshots: Path) -> list[str]:
    """What is wrong with the portal page now open (empty: nothing): a screenshot at 1280
    and at 390 px (``name-1280.png``, ``name-390.png`` in ``screenshots``), axe-core's
    critical and serious violations at each width, and at 390 px a page that scrolls
    sideways or a table cut instead of scrolling in its own box. Leaves the window at
    1280 px."""
    from playwright.sync_api import expect

    from tests.router_admin.browser.conftest import (
        FORBIDDEN_IMPACTS,
        NARROW,
        WIDE,
        accessibility_violations,
        describe,
    )

    problems = []
    if name == "api-docs":
        expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    else:
        expect(page.locator("main h1")).to_be_visible()
    height = page.viewport_size["height"] if page.viewport_size else 900
    page.set_viewport_size({"width": WIDE, "height": height})
    page.screenshot(path=str(screenshots / f"{name}-{WIDE}.png"), full_page=True)
    bad = [v for v in accessibility_violations(page) if v["impact"] in FORBIDDEN_IMPACTS]
    if bad:
        problems.append(f"accessibility violations at {WIDE} px: {describe(bad)}")
    page.set_viewport_size({"width": NARROW, "height": 900})
    page.screenshot(path=str(screenshots / f"{name}-{NARROW}.png"), full_page=True)
    if (overflow := page_overflow(page)) > 0:
        problems.append(f"the page scrolls sideways at {NARROW} px by {overflow} px: "
                        f"{sticking_out(page)}")
    if cut := tables_not_in_a_scroll_box(page):
        problems.append(f"tables cut at {NARROW} px: {cut}")
    bad = [v for v in accessibility_violations(page) if v["impact"] in FORBIDDEN_IMPACTS]
    if bad:
        problems.append(f"accessibility violations at {NARROW} px: {describe(bad)}")
    for width in (WIDE, NARROW):
        assert (screenshots / f"{name}-{width}.png").stat().st_size > 5_000
    page.set_viewport_size({"width": WIDE, "height": height})
    return problems
