"""A real Chromium (Debian's, at /usr/bin/chromium) driven by Playwright against the whole
router served by uvicorn: the portal's pages and the /v1 API on one port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.conf import settings as django_settings
from django.db import connections

from tests.live_router import LiveRouter

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


@pytest.fixture
def page(site: LiveRouter) -> Iterator[Any]:
    """A fresh browser page at the live router. Set up after (and so torn down before) the
    database fixtures, whose teardown would otherwise run inside Playwright's event loop."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        context = browser.new_context(base_url=site.url, viewport={"width": 1280,
                                                                    "height": 900})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
        page = context.new_page()
        page.set_default_timeout(15_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()
