"""What the Content-Security-Policy tests share: the policy the site must send, and a reader
of pages that finds the inline code such a policy refuses."""

from __future__ import annotations

from html.parser import HTMLParser

# The policy every page of the site sends (router_admin.settings.ROUTER_CSP), directive by
# directive.
EXPECTED_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "frame-ancestors": ["'none'"],
    "form-action": ["'self'", "https://checkout.stripe.com"],
}

# <script> types that are data, not code: the policy does not run (nor refuse) them.
_DATA_SCRIPT_TYPES = {"application/json", "application/ld+json", "text/template"}


def policy_directives(header: str) -> dict[str, list[str]]:
    """``"default-src 'self'; img-src 'self' data:"`` -> a directive: sources dict."""
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, *sources = part.split()
        assert name not in directives, f"{name} given twice in {header!r}"
        directives[name] = sources
    return directives


class _InlineCodeFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        where = f"<{tag} {' '.join(f'{k}={v!r}' for k, v in attrs)}>"
        if tag == "style":
            self.found.append(f"a <style> block: {where}")
        if tag == "script" and "src" not in attributes and (
                attributes.get("type") or "text/javascript") not in _DATA_SCRIPT_TYPES:
            self.found.append(f"an inline <script>: {where}")
        for name, value in attrs:
            if name == "style":
                self.found.append(f"a style attribute: {where}")
            elif name.startswith("on"):
                self.found.append(f"an inline event handler: {where}")
            elif name in {"href", "src", "action"} and (value or "").strip().lower() \
                    .startswith("javascript:"):
                self.found.append(f"a javascript: URL: {where}")


def inline_code(html: str) -> list[str]:
    """The inline scripts, styles and event handlers in ``html``: each one a page of ours
    would need ``'unsafe-inline'`` for."""
    finder = _InlineCodeFinder()
    finder.feed(html)
    finder.close()
    return finder.found
