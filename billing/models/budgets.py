from __future__ import annotations

from django.db import models
from django.db.models import F, Q


class KeyBudget(models.Model):
    """A spend cap on one API key: over its lifetime, per calendar month (UTC), or both.

    What the key has spent (posted) and has reserved for requests in flight (pending) is
    kept here and moved in the same statements as the wallet, so the CHECK constraints make
    the caps hold whatever the number of router instances: a reservation that would pass a
    cap fails at the database and the request gets 402.
    """

    api_key = models.OneToOneField("accounts.ApiKey", on_delete=models.CASCADE,
                                   related_name="budget")
    lifetime_limit_micros = models.BigIntegerField(null=True, blank=True)
    monthly_limit_micros = models.BigIntegerField(null=True, blank=True)
    spent_micros = models.BigIntegerField(default=0)
    pending_micros = models.BigIntegerField(default=0)
    # The calendar month ``month_spent_micros`` counts; the first reservation of a new month
    # starts it again from zero.
    month = models.DateField(null=True, blank=True)
    month_spent_micros = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(spent_micros__gte=0, pending_micros__gte=0,
                            month_spent_micros__gte=0),
                name="billing_keybudget_not_negative"),
            models.CheckConstraint(
                condition=Q(lifetime_limit_micros__isnull=True)
                | Q(lifetime_limit_micros__gte=F("spent_micros") + F("pending_micros")),
                name="billing_keybudget_within_lifetime_cap"),
            models.CheckConstraint(
                condition=Q(monthly_limit_micros__isnull=True)
                | Q(monthly_limit_micros__gte=F("month_spent_micros") + F("pending_micros")),
                name="billing_keybudget_within_monthly_cap"),
        ]

    def __str__(self) -> str:
        return f"spend cap of {self.api_key}"


class MemberBudget(models.Model):
    """A member's spend inside an organization, and the caps an admin set on it: over the
    membership's lifetime, per calendar month (UTC), or both.

    One row per membership, made when the member joins, so what they spend is counted from
    the start. It moves in the same statements as the organization's wallet and the key's
    budget, so no interleaving of requests, members or router instances spends past a cap:
    a reservation that would is refused by the CHECK constraints.
    """

    organization = models.ForeignKey("organizations.Organization", on_delete=models.CASCADE,
                                     related_name="member_budgets")
    user = models.ForeignKey("accounts.User", on_delete=models.CASCADE,
                             related_name="member_budgets")
    lifetime_limit_micros = models.BigIntegerField(null=True, blank=True)
    monthly_limit_micros = models.BigIntegerField(null=True, blank=True)
    spent_micros = models.BigIntegerField(default=0)
    pending_micros = models.BigIntegerField(default=0)
    month = models.DateField(null=True, blank=True)
    month_spent_micros = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"],
                                    name="billing_memberbudget_one_per_member"),
            models.CheckConstraint(
                condition=Q(spent_micros__gte=0, pending_micros__gte=0,
                            month_spent_micros__gte=0),
                name="billing_memberbudget_not_negative"),
            models.CheckConstraint(
                condition=Q(lifetime_limit_micros__isnull=True)
                | Q(lifetime_limit_micros__gte=F("spent_micros") + F("pending_micros")),
                name="billing_memberbudget_within_lifetime_cap"),
            models.CheckConstraint(
                condition=Q(monthly_limit_micros__isnull=True)
                | Q(monthly_limit_micros__gte=F("month_spent_micros") + F("pending_micros")),
                name="billing_memberbudget_within_monthly_cap"),
        ]

    def __str__(self) -> str:
        return f"budget of {self.user_id} in {self.organization_id}"
