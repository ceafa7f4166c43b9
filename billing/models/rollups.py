from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Coalesce


class UsageRollup(models.Model):
    """Usage summed per hour or per day (UTC), user, key and model (and the organization
    that paid, when one did: a member's organization requests are not their own spend).

    Charts and reports read these instead of the raw usage records. Rows are recomputed
    from the records for a window at a time (``billing.services.rollups``), never
    incremented, so running the job twice, or late, gives the same numbers.
    """

    class Period(models.TextChoices):
        HOUR = "hour", "Hour"
        DAY = "day", "Day"

    period = models.CharField(max_length=4, choices=Period.choices)
    bucket_start = models.DateTimeField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="+", db_index=False)
    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.CASCADE, null=True,
                                blank=True, related_name="+", db_index=False)
    organization = models.ForeignKey("organizations.Organization", on_delete=models.CASCADE,
                                     null=True, blank=True, related_name="+",
                                     db_index=False)
    model = models.CharField(max_length=200)
    requests = models.PositiveIntegerField(default=0)
    failed_requests = models.PositiveIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    cost_micros = models.BigIntegerField(default=0)
    # The upstream's cost of the requests whose cost is known, and how many were not: a
    # margin is only shown over the known part, and the unknown part is said.
    upstream_cost_micros = models.BigIntegerField(default=0)
    unknown_cost_requests = models.PositiveIntegerField(default=0)
    # What those requests of unknown cost were charged: the margin is cost_micros minus this
    # minus upstream_cost_micros, over the requests whose cost is known.
    unknown_cost_charged_micros = models.BigIntegerField(default=0)

    class Meta:
        indexes = [
            models.Index(fields=["user", "period", "bucket_start"]),
            models.Index(fields=["period", "bucket_start"]),
            models.Index(fields=["organization", "period", "bucket_start"],
                         name="billing_rollup_org",
                         condition=models.Q(organization__isnull=False)),
            # The admin's search by key (billing.admin_search): written by the roll-up job,
            # never on the request path.
            models.Index(fields=["api_key", "period", "bucket_start"],
                         name="billing_rollup_key",
                         condition=models.Q(api_key__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.period} {self.bucket_start:%Y-%m-%d %H:00} {self.model}"


class UsageRollupMark(models.Model):
    """How far the hourly roll-ups are complete: one row, moved by the roll-up job after it
    has recomputed the hours it vouches for.

    Every usage record created before ``complete_before`` (an hour boundary) is counted in
    the hourly and daily roll-ups; readers sum the roll-ups before it and the records from
    it, so a busy user's figures for today read an hour or so of records, not the day's.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    complete_before = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1),
                                   name="billing_usagerollupmark_one_row"),
        ]

    def __str__(self) -> str:
        return f"usage roll-ups complete before {self.complete_before:%Y-%m-%d %H:%M}"


class UsageOwnerRollup(models.Model):
    """The usage roll-ups summed per owner (a user's own spend, or an organization's), per
    hour or day: what the admin dashboard's spenders read. A bucket has a row per owner,
    where ``UsageRollup`` has one per owner, key and model, so a window of it stays a few
    thousand rows however thick the traffic.

    Rewritten from ``UsageRollup`` by the roll-up job in the same transaction as the buckets
    it sums (``billing.services.rollups``).
    """

    period = models.CharField(max_length=4, choices=UsageRollup.Period.choices)
    bucket_start = models.DateTimeField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="+", db_index=False)
    organization = models.ForeignKey("organizations.Organization", on_delete=models.CASCADE,
                                     null=True, blank=True, related_name="+",
                                     db_index=False)
    requests = models.BigIntegerField(default=0)
    cost_micros = models.BigIntegerField(default=0)

    class Meta:
        # One row per owner and bucket (a user's own spend has no organization: 0 stands
        # for it, as in the roll-up statements), which the job's upsert writes against; it
        # also serves the dashboard's range of buckets. An expression, not NULLS NOT
        # DISTINCT, which SQLite lacks.
        constraints = [models.UniqueConstraint(
            "period", "bucket_start", "user", Coalesce("organization", 0),
            name="billing_ownerrollup_one")]

    def __str__(self) -> str:
        return f"{self.period} {self.bucket_start:%Y-%m-%d %H:00} user {self.user_id}"
