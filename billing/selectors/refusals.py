"""Reads of a user's refused requests (402 and 429), for the usage list and the API."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet, Sum

from accounts.models import User
from billing.models import RefusedRequests
from billing.selectors.usage import UsageFilters


def refused_requests_of(*, user: User,
                        filters: UsageFilters | None = None) -> QuerySet[RefusedRequests]:
    """The user's refused requests, per key and minute, newest first, narrowed by
    ``filters`` (its status is ignored: every group is a refusal); only ever their own."""
    filters = filters or UsageFilters()
    groups = RefusedRequests.objects.filter(user=user).select_related("api_key")
    if filters.model:
        groups = groups.filter(model=filters.model)
    if filters.api_key_id is not None:
        groups = groups.filter(api_key_id=filters.api_key_id)
    if filters.endpoint:
        groups = groups.filter(endpoint=filters.endpoint)
    if filters.since is not None:
        groups = groups.filter(minute__gte=filters.since)
    if filters.until is not None:
        groups = groups.filter(minute__lt=filters.until)
    return groups.order_by("-minute", "-pk")


def refused_count_of(*, user: User, since: datetime) -> int:
    """How many of the user's requests were refused since ``since``."""
    return (RefusedRequests.objects.filter(user=user, minute__gte=since)
            .aggregate(total=Sum("count"))["total"] or 0)
