"""Usage: a 30-day chart, a per-model breakdown, the recent requests with filters, and the
same requests as CSV. Every read is of the signed-in user's own records."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, QueryDict, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.selectors import api_keys_of
from billing.models import UsageRecord
from billing.money import format_usd
from billing.selectors import (
    refused_count_of,
    refused_requests_of,
    usage_by_model,
    usage_daily,
    usage_records_of,
)
from portal.charts import bar_chart
from portal.csv_copy import SafeText, Text, Usd, UtcIso
from portal.csv_export import spreadsheet_safe, usage_csv_response
from portal.forms import REFUSED, UsageFilterForm
from portal.keyset_pages import portal_page
from portal.templatetags.portal_tags import thousands, usd
from portal.views.keys import owned_key_or_404

PAGE_SIZE = 25
CHART_DAYS = 30
REFUSED_SHOWN = 5
CSV_HEADER = ["time_utc", "request_id", "endpoint", "model", "api_key", "api_key_name",
              "status", "prompt_tokens", "completion_tokens", "cached_tokens",
              "cache_write_tokens", "cost_usd", "latency_ms", "source"]


def _filtered_records(request: HttpRequest) -> tuple[UsageFilterForm, QuerySet[UsageRecord]]:
    form = UsageFilterForm(request.GET)
    filters = form.filters()
    if filters.status == REFUSED:
        # Records are what was charged; refusals are shown from their counts instead.
        return form, UsageRecord.objects.none()
    if filters.api_key_id is not None:
        owned_key_or_404(request.user, filters.api_key_id)  # another user's key: 404
    return form, usage_records_of(user=request.user, filters=filters)


@login_required
@require_GET
def usage(request: HttpRequest) -> HttpResponse:
    form, records = _filtered_records(request)
    filters = form.filters()
    refused_only = filters.status == REFUSED
    refused = refused_requests_of(user=request.user, filters=filters)
    # By cursor, newest first: page 1,000 costs what page 1 costs, and nothing counts the
    # user's whole history (the 30-day totals above the table come from the roll-ups).
    if refused_only:
        page, links = portal_page(request, refused, scope=f"usage-refused:{request.user.pk}",
                                  size=PAGE_SIZE, order=("minute", "id"))
    else:
        page, links = portal_page(request, records, scope=f"usage:{request.user.pk}",
                                  size=PAGE_SIZE)
    days = usage_daily(user=request.user, days=CHART_DAYS)
    dates = [day.day for day in days]
    query = request.GET.copy()
    for name in ("cursor", "page"):
        query.pop(name, None)
    since = timezone.now() - timedelta(days=CHART_DAYS)
    return render(request, "portal/usage.html", {
        "form": form,
        "page": page,
        "links": links,
        "refused_only": refused_only,
        # The latest refusals above the requests, so a broken integration shows why.
        "refused_latest": [] if refused_only else list(refused[:REFUSED_SHOWN]),
        "refused_query": _with_status(query, REFUSED),
        "query": query.urlencode(),
        "keys": api_keys_of(user=request.user),
        "by_model": usage_by_model(user=request.user, days=CHART_DAYS),
        "spend_chart": bar_chart(days=dates, format_value=usd, series=[
            ("Spend", "bar-spend", [day.cost_micros for day in days])]),
        "tokens_chart": bar_chart(days=dates, format_value=thousands, series=[
            ("Prompt", "bar-prompt", [day.prompt_tokens for day in days]),
            ("Completion", "bar-completion", [day.completion_tokens for day in days])]),
        "totals": {"requests": sum(day.requests for day in days),
                   "cost_micros": sum(day.cost_micros for day in days),
                   "tokens": sum(day.prompt_tokens + day.completion_tokens for day in days),
                   "refused": refused_count_of(user=request.user, since=since)},
    })


def _with_status(query: QueryDict, status: str) -> str:
    narrowed = query.copy()
    narrowed["status"] = status
    return narrowed.urlencode()


def _row(record: UsageRecord) -> list[Any]:
    api_key = record.api_key
    return [record.created_at.isoformat(), record.request_id, record.endpoint,
            spreadsheet_safe(record.model),
            api_key.prefix if api_key else "", spreadsheet_safe(api_key.name) if api_key else "",
            record.status, record.prompt_tokens, record.completion_tokens,
            record.cached_tokens, record.cache_write_tokens, format_usd(record.cost_micros),
            "" if record.latency_ms is None else record.latency_ms, record.source]


# ``_row`` as SQL, for the COPY export on PostgreSQL (portal.csv_copy): cell for cell.
CSV_SQL_ROW = (UtcIso("created_at"), Text("request_id"), Text("endpoint"), SafeText("model"),
               Text("api_key__prefix"), SafeText("api_key__name"), Text("status"),
               "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens",
               Usd("cost_micros"), "latency_ms", Text("source"))


@login_required
@require_GET
def usage_csv(request: HttpRequest) -> StreamingHttpResponse:
    _, records = _filtered_records(request)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    return usage_csv_response(header=CSV_HEADER, records=records, row=_row,
                              columns=CSV_SQL_ROW, filename=f"usage-{stamp}.csv")
