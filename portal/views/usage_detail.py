"""One request's own page: what it used, at which price, and how its charge adds up."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from portal.selectors_catalogue import cost_breakdown, usage_record_of


@login_required
@require_GET
def usage_detail(request: HttpRequest, request_id: str) -> HttpResponse:
    record = usage_record_of(user=request.user, request_id=request_id)
    if record is None:  # another user's request too: its existence cannot be probed
        raise Http404("No such request.")
    return render(request, "portal/usage_detail.html", {
        "record": record, "breakdown": cost_breakdown(record)})
