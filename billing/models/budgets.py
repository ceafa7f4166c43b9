from __future__ import annotations

from django.db import models
from django.db.models import F, Q


class SpendBudget(models.Model):
    """Caps on spending, over a lifetime, per calendar month (UTC), or both, with what was
    spent (posted) and what requests in flight reserve (pending).

    Moved in the same statements as the wallet, so the CHECK constraints make the caps hold
    whatever the number of router instances: a reservation that would pass a cap fails at
    the database and the request gets 402. Each budget's constraints are named after its
    table (``billing_keybudget_within_lifetime_cap``): the request path tells them apart by
    that prefix (``billing.services.hot_path``).
    """

    lifetime_limit_micros = models.BigIntegerField(null=True, blank=True)
    monthly_limit_micros = models.BigIntegerField(null=True, blank=True)
    spent_micros = models.BigIntegerField(default=0)
    pending_micros = models.BigIntegerField(default=0)
    # The calendar month ``month_spent_micros`` counts; the first reservation of a new month
    # starts it again from zero.
    month = models.DateField(null=True, blank=True)
    month_spent_micros = models.BigIntegerField(default=0)

    class Meta:
        abstract = True
        constraints = [
            models.CheckConstraint(
                condition=Q(spent_micros__gte=0, pending_micros__gte=0,
                            month_spent_micros__gte=0),
                name="%(app_label)s_%(class)s_not_negative"),
            models.CheckConstraint(
                condition=Q(lifetime_limit_micros__isnull=True)
                | Q(lifetime_limit_micros__gte=F("spent_micros") + F("pending_micros")),
                name="%(app_label)s_%(class)s_within_lifetime_cap"),
            models.CheckConstraint(
                condition=Q(monthly_limit_micros__isnull=True)
                | Q(monthly_limit_micros__gte=F("month_spent_micros") + F("pending_micros")),
                name="%(app_label)s_%(class)s_within_monthly_cap"),
        ]


class KeyBudget(SpendBudget):
    """A spend cap on one API key."""

    api_key = models.OneToOneField("accounts.ApiKey", on_delete=models.CASCADE,
                                   related_name="budget")

    class Meta(SpendBudget.Meta):
        abstract = False

    def __str__(self) -> str:
        return f"spend cap of {self.api_key}"


class MemberBudget(SpendBudget):
    """A member's spend inside an organization, and the caps an admin set on it.

    One row per membership, made when the member joins, so what they spend is counted from
    the start; it moves with the organization's wallet and the key's budget.
    """

    organization = models.ForeignKey("organizations.Organization", on_delete=models.CASCADE,
                                     related_name="member_budgets")
    user = models.ForeignKey("accounts.User", on_delete=models.CASCADE,
                             related_name="member_budgets")

    class Meta(SpendBudget.Meta):
        abstract = False
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"],
                                    name="billing_memberbudget_one_per_member"),
            *SpendBudget.Meta.constraints,
        ]

    def __str__(self) -> str:
        return f"budget of {self.user_id} in {self.organization_id}"
