"""Monthly statements: the signed-in user's own, as a printable page and as CSV. Only ever
the user's own wallet: there is no user id in these URLs to change."""

from __future__ import annotations

from datetime import date

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from billing.selectors.statements import (
    BadMonth,
    month_parse,
    statement,
    statement_entries,
    statement_months,
)
from portal.statement_csv import statement_csv_response


def month_from_query(request: HttpRequest) -> date:
    value = request.GET.get("month")
    if not value:
        return timezone.localdate(timezone.now(), timezone.get_default_timezone()).replace(day=1)
    try:
        return month_parse(value)
    except BadMonth:
        raise Http404("No such month.") from None


@login_required
@require_GET
def statement_page(request: HttpRequest) -> HttpResponse:
    month = month_from_query(request)
    return render(request, "portal/statement.html", {
        "statement": statement(user=request.user, month=month),
        "months": list(statement_months(user=request.user)),
        "page_url": reverse("portal:statement"),
        "csv_url": f"{reverse('portal:statement_csv')}?month={month:%Y-%m}",
    })


@login_required
@require_GET
def statement_csv(request: HttpRequest) -> StreamingHttpResponse:
    month = month_from_query(request)
    return statement_csv_response(statement=statement(user=request.user, month=month),
                                  entries=statement_entries(user=request.user, month=month))
