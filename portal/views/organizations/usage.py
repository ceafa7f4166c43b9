"""An organization's usage: a 30-day chart, sums by member, key and model, the requests
with filters, and the same requests as CSV. A member reads only their own requests; roles
that see everyone's usage (admins, billing, owners) read every member's and may narrow to
one."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from accounts.models import User
from billing.models import UsageRecord
from billing.money import format_usd
from billing.selectors import UsageFilters
from billing.selectors.organization_usage import (
    organization_usage_by_key,
    organization_usage_by_member,
    organization_usage_by_model,
    organization_usage_daily,
    organization_usage_records,
)
from organizations.selectors import members_of, organization_keys_of, sees_all_usage
from portal.charts import bar_chart
from portal.csv_copy import SafeText, Text, Usd, UtcIso
from portal.csv_export import spreadsheet_safe, usage_csv_response
from portal.forms_organizations import OrganizationUsageFilterForm
from portal.keyset_pages import portal_page
from portal.templatetags.portal_tags import thousands, usd
from portal.views.organizations.access import (
    OrgAccess,
    key_in_or_404,
    org_page,
    usage_member,
)

PAGE_SIZE = 25
CHART_DAYS = 30
CSV_HEADER = ["time_utc", "request_id", "member", "endpoint", "model", "api_key",
              "api_key_name", "status", "prompt_tokens", "completion_tokens",
              "cached_tokens", "cache_write_tokens", "cost_usd", "latency_ms", "source"]


def _scope(request: HttpRequest, access: OrgAccess
           ) -> tuple[OrganizationUsageFilterForm, User | None, UsageFilters]:
    """The filters asked for, and whose requests they may cover (None: everyone's)."""
    form = OrganizationUsageFilterForm(request.GET)
    filters = form.filters()
    if filters.api_key_id is not None:
        key_in_or_404(access, filters.api_key_id)  # another organization's key: 404
    return form, usage_member(access, form.member_id()), filters


@org_page()
def usage(request: HttpRequest, access: OrgAccess) -> HttpResponse:
    form, member, filters = _scope(request, access)
    organization = access.organization
    records = organization_usage_records(organization=organization, member=member,
                                         filters=filters)
    # By cursor, newest first, on the organization's index: no count of its history.
    page, links = portal_page(request, records, size=PAGE_SIZE,
                              scope=f"org-usage:{organization.pk}:{access.user.pk}")
    days = organization_usage_daily(organization=organization, member=member,
                                    days=CHART_DAYS)
    dates = [day.day for day in days]
    query = request.GET.copy()
    for name in ("cursor", "page"):
        query.pop(name, None)
    sees_all = sees_all_usage(access.role)
    return render(request, "portal/organizations/usage.html", {
        "access": access, "form": form, "page": page, "links": links,
        "query": query.urlencode(),
        "sees_all": sees_all, "member": member,
        "members": members_of(organization=organization) if sees_all else [],
        "keys": organization_keys_of(organization=organization, user=access.user,
                                     role=access.role),
        "by_member": (organization_usage_by_member(organization=organization,
                                                   member=member, days=CHART_DAYS)
                      if sees_all else []),
        "by_key": organization_usage_by_key(organization=organization, member=member,
                                            days=CHART_DAYS),
        "by_model": organization_usage_by_model(organization=organization, member=member,
                                                days=CHART_DAYS),
        "spend_chart": bar_chart(days=dates, format_value=usd, series=[
            ("Spend", "bar-spend", [day.cost_micros for day in days])]),
        "tokens_chart": bar_chart(days=dates, format_value=thousands, series=[
            ("Prompt", "bar-prompt", [day.prompt_tokens for day in days]),
            ("Completion", "bar-completion", [day.completion_tokens for day in days])]),
        "totals": {"requests": sum(day.requests for day in days),
                   "cost_micros": sum(day.cost_micros for day in days),
                   "tokens": sum(day.prompt_tokens + day.completion_tokens for day in days)},
    })


def csv_row(record: UsageRecord) -> list[Any]:
    """One request as a CSV row; text people chose (model, key name) cannot become a
    spreadsheet formula."""
    api_key = record.api_key
    return [record.created_at.isoformat(), record.request_id, record.user.email,
            record.endpoint, spreadsheet_safe(record.model),
            api_key.prefix if api_key else "",
            spreadsheet_safe(api_key.name) if api_key else "", record.status,
            record.prompt_tokens, record.completion_tokens, record.cached_tokens,
            record.cache_write_tokens, format_usd(record.cost_micros),
            "" if record.latency_ms is None else record.latency_ms, record.source]


# ``csv_row`` as SQL, for the COPY export on PostgreSQL (portal.csv_copy): cell for cell.
CSV_SQL_ROW = (UtcIso("created_at"), Text("request_id"), Text("user__email"),
               Text("endpoint"), SafeText("model"), Text("api_key__prefix"),
               SafeText("api_key__name"), Text("status"), "prompt_tokens",
               "completion_tokens", "cached_tokens", "cache_write_tokens",
               Usd("cost_micros"), "latency_ms", Text("source"))


@org_page()
def usage_csv(request: HttpRequest, access: OrgAccess) -> HttpResponse:
    _, member, filters = _scope(request, access)
    records = organization_usage_records(organization=access.organization, member=member,
                                         filters=filters)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    return usage_csv_response(header=CSV_HEADER, records=records, row=csv_row,
                              columns=CSV_SQL_ROW,
                              filename=f"usage-org{access.organization.pk}-{stamp}.csv")
