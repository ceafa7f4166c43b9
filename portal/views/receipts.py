"""Receipts of top-ups: a printable page and, where WeasyPrint loads, a PDF. Who may see one
is billing's decision (``billing.selectors.receipts``); anything else is a 404."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from billing.selectors.receipts import Receipt, ReceiptNotFound, receipt_for
from portal.receipt_pdf import receipt_pdf_available, receipt_pdf_render


def _receipt(request: HttpRequest, entry_id: int) -> Receipt:
    try:
        return receipt_for(user=request.user, entry_id=entry_id)
    except ReceiptNotFound:
        raise Http404("No such receipt.") from None


@login_required
@require_GET
def receipt_page(request: HttpRequest, entry_id: int) -> HttpResponse:
    return render(request, "portal/receipt.html", {
        "receipt": _receipt(request, entry_id),
        "pdf_available": receipt_pdf_available(),
    })


@login_required
@require_GET
def receipt_pdf(request: HttpRequest, entry_id: int) -> HttpResponse:
    receipt = _receipt(request, entry_id)
    if not receipt_pdf_available():
        raise Http404("PDF receipts are not available on this router; print the page instead.")
    return HttpResponse(receipt_pdf_render(receipt=receipt), content_type="application/pdf",
                        headers={
                            "Content-Disposition": f'inline; filename="{receipt.number}.pdf"',
                            # A document about a person's payments: no shared cache keeps it.
                            "Cache-Control": "private, no-store",
                        })
