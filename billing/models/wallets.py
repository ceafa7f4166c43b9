from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q


class Wallet(models.Model):
    """A prepaid balance in micro-USD, of a user or of an organization.

    ``posted_micros`` is what the ledger says the owner has; ``pending_micros`` is what requests
    in flight have reserved. The CHECK constraints make ``posted - pending >= 0`` a fact the
    database guarantees, whatever code writes to it.
    """

    # A wallet belongs to one user or to one organization (the CHECK below).
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                related_name="wallet", null=True, blank=True)
    organization = models.OneToOneField("organizations.Organization",
                                        on_delete=models.PROTECT, related_name="wallet",
                                        null=True, blank=True)
    posted_micros = models.BigIntegerField(default=0)
    pending_micros = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Who pays, as receipts name them; set by the wallet's owner (empty: their email). A
    # database default too: a migration whose models predate these columns (0004 gives
    # every user a wallet) inserts wallets without them.
    billing_name = models.CharField(max_length=200, blank=True, db_default="")
    billing_address = models.TextField(blank=True, db_default="")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(pending_micros__gte=0),
                                   name="billing_wallet_pending_not_negative"),
            models.CheckConstraint(condition=Q(posted_micros__gte=F("pending_micros")),
                                   name="billing_wallet_available_not_negative"),
            models.CheckConstraint(condition=Q(user__isnull=True, organization__isnull=False)
                                   | Q(user__isnull=False, organization__isnull=True),
                                   name="billing_wallet_one_owner"),
        ]

    def __str__(self) -> str:
        return f"wallet of {self.user or self.organization}"

    @property
    def holder_label(self) -> str:
        """Who the wallet belongs to, for lists: the user's email or the organization's
        name (marked, so the two cannot be confused)."""
        if self.user_id is not None:
            return self.user.email
        return f"{self.organization.name} (organization)"

    @property
    def available_micros(self) -> int:
        return self.posted_micros - self.pending_micros
