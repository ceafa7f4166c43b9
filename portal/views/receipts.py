"""Receipts of top-ups: a printable page and, where WeasyPrint loads, a PDF. Who may see one
is billing's decision (``billing.selectors.receipts``); anything else is a 404.

A person's own receipts live here; an organization's, under its billing pages
(``portal.views.organizations.billing_papers``), are drawn by the same two functions with
that organization's links.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from billing.models import Wallet
from billing.selectors.receipts import Receipt, ReceiptNotFound, receipt_for
from portal.receipt_pdf import receipt_pdf_available, receipt_pdf_render


@dataclass(frozen=True)
class ReceiptLinks:
    """Where a receipt page's links go: back to its account's top-ups, its PDF, and the
    form that edits the billing details it shows."""

    back: str
    back_label: str
    pdf: str
    billing_details: str


def receipt_or_404(request: HttpRequest, entry_id: int, *, wallet: Wallet | None = None
                   ) -> Receipt:
    try:
        return receipt_for(user=request.user, entry_id=entry_id, wallet=wallet)
    except ReceiptNotFound:
        raise Http404("No such receipt.") from None


def receipt_page_response(request: HttpRequest, receipt: Receipt,
                          links: ReceiptLinks) -> HttpResponse:
    return render(request, "portal/receipt.html", {
        "receipt": receipt, "links": links, "pdf_available": receipt_pdf_available(),
    })


def receipt_pdf_response(receipt: Receipt) -> HttpResponse:
    if not receipt_pdf_available():
        raise Http404("PDF receipts are not available on this router; print the page instead.")
    return HttpResponse(receipt_pdf_render(receipt=receipt), content_type="application/pdf",
                        headers={
                            "Content-Disposition": f'inline; filename="{receipt.number}.pdf"',
                            # A document about someone's payments: no shared cache keeps it.
                            "Cache-Control": "private, no-store",
                        })


@login_required
@require_GET
def receipt_page(request: HttpRequest, entry_id: int) -> HttpResponse:
    return receipt_page_response(request, receipt_or_404(request, entry_id), ReceiptLinks(
        back=reverse("portal:topups"), back_label="Top-ups",
        pdf=reverse("portal:receipt_pdf", args=[entry_id]),
        billing_details=reverse("portal:billing_details")))


@login_required
@require_GET
def receipt_pdf(request: HttpRequest, entry_id: int) -> HttpResponse:
    return receipt_pdf_response(receipt_or_404(request, entry_id))
