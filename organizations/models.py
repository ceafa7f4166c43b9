"""Organizations: a team sharing one prepaid wallet, its members and their roles, and the
invitations that bring people in. The money (the wallet, the members' budgets) lives in
``billing``; this room says who belongs where and may do what."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower


class Role(models.TextChoices):
    """What a member may do, each including the ones below it except where said:
    owner (everything, deleting the organization and transferring ownership included),
    admin (members, keys, budgets), billing (top-ups, statements; not members or keys),
    member (their own keys and usage)."""

    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    BILLING = "billing", "Billing"
    MEMBER = "member", "Member"


class Organization(models.Model):
    name = models.CharField(max_length=150)
    created_at = models.DateTimeField(auto_now_add=True)
    # Deleted by its owner: members and keys are gone, the wallet and its ledger are kept
    # (money is never deleted); the name stays for the books.
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE,
                                     related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization", "created_at"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"],
                                    name="organizations_one_membership_per_user"),
            models.CheckConstraint(condition=Q(role__in=Role.values),
                                   name="organizations_membership_role_known"),
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.role}) in {self.organization}"


class Invitation(models.Model):
    """An invitation by email. Its link carries a signed token naming this row; the row
    makes it single-use (``accepted_at``), expiring (``expires_at``) and revocable."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE,
                                     related_name="invitations")
    email = models.EmailField(max_length=254)
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                   null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                    null=True, blank=True, related_name="+")
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(role__in=Role.values),
                                   name="organizations_invitation_role_known"),
            # One open invitation per address and organization.
            models.UniqueConstraint(Lower("email"), "organization",
                                    condition=Q(accepted_at__isnull=True,
                                                revoked_at__isnull=True),
                                    name="organizations_one_open_invitation"),
        ]

    def __str__(self) -> str:
        return f"{self.email} to {self.organization}"
