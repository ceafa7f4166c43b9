"""Receipts as PDF, drawn by WeasyPrint from the receipt's own HTML (the partial the page
shows) and the receipt's stylesheet.

WeasyPrint is pure Python but draws text with Pango, a system library. Where it cannot be
loaded the portal offers no PDF (the link is not shown, the URL is a 404) and the printable
page is the receipt.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from django.template.loader import render_to_string

from billing.selectors.receipts import Receipt

logger = logging.getLogger(__name__)

RECEIPT_CSS = Path(__file__).resolve().parent / "static" / "portal" / "receipt.css"


@functools.cache
def receipt_pdf_available() -> bool:
    """Whether WeasyPrint loads here; asked once per process (the import takes a while)."""
    try:
        import weasyprint  # noqa: F401
    except (ImportError, OSError) as exc:  # OSError: installed, but Pango is missing
        logger.warning("PDF receipts are off: WeasyPrint cannot be loaded (%s)", exc)
        return False
    return True


def receipt_pdf_render(*, receipt: Receipt) -> bytes:
    """The receipt as a PDF document (A4). Callers check ``receipt_pdf_available`` first."""
    from weasyprint import CSS, HTML
    from weasyprint.urls import URLFetcher

    # Nothing is fetched while drawing: the document names no resource, and a fetcher
    # that allows no scheme keeps it so, were a template (or a billing address that got
    # past escaping) ever to name one; the server must not be made to request URLs.
    no_fetching = URLFetcher(allowed_protocols=())
    html = render_to_string("portal/receipt_document.html", {"receipt": receipt})
    stylesheet = CSS(filename=str(RECEIPT_CSS), url_fetcher=no_fetching)
    return HTML(string=html, url_fetcher=no_fetching).write_pdf(stylesheets=[stylesheet])
