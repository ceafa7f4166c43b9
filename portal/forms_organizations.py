"""Forms of the organization pages. Like ``portal.forms``, they parse what a person typed;
``organizations.services`` decides who may do it. Choices offered follow the actor's role
(only an owner is offered "owner"), but the service checks again: a forged choice is
refused there, not trusted here."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from billing.models import UsageRecord
from organizations.models import Membership, Role
from organizations.roles import Action, may
from portal.forms import UsageFilterForm, _usd_input, parse_usd


def role_choices(actor_role: str | None) -> list[tuple[str, str]]:
    """The roles an actor may hand out: owners every role, others all but owner."""
    return [(value, label) for value, label in Role.choices
            if value != Role.OWNER or may(actor_role, Action.OWN)]


class OrganizationForm(forms.Form):
    name = forms.CharField(label="Organization name", max_length=150, widget=forms.TextInput(
        attrs={"autocomplete": "organization"}),
        help_text="Your team or company, as members and receipts will see it.")


class SwitchForm(forms.Form):
    """The navigation's account switcher: "" is the personal account, else an
    organization id (checked against the user's memberships by the view)."""

    account = forms.CharField(required=False, max_length=20)


class InvitationForm(forms.Form):
    email = forms.EmailField(max_length=254, widget=forms.EmailInput(
        attrs={"autocomplete": "off"}),
        help_text="We email a link valid for a few days; it works once, for this address.")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)

    def __init__(self, *args: Any, actor_role: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = role_choices(actor_role)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)

    def __init__(self, *args: Any, actor_role: str | None = None, member_email: str = "",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = role_choices(actor_role)
        # Named on the select itself: a visually hidden <label> is positioned absolutely and
        # would escape the table's scroll box on a phone.
        self.fields["role"].widget.attrs["aria-label"] = f"Role of {member_email}"


class TransferForm(forms.Form):
    """Ownership to another member; the owner giving it becomes an admin."""

    user = forms.TypedChoiceField(label="New owner", coerce=int, choices=())

    def __init__(self, *args: Any, members: list[Membership] | None = None,
                 actor_id: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["user"].choices = [
            (m.user_id, f"{m.user.email} ({m.get_role_display()})")
            for m in members or [] if m.user_id != actor_id]


class DeleteForm(forms.Form):
    """Deleting takes typing the name, so a slip of the mouse cannot do it."""

    confirm = forms.CharField(label="Type the organization's name to confirm", max_length=150)

    def __init__(self, *args: Any, name: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.expected = name

    def clean_confirm(self) -> str:
        value = self.cleaned_data["confirm"].strip()
        if value != self.expected:
            raise ValidationError("That is not the organization's name.")
        return value


class OrganizationKeyForm(forms.Form):
    name = forms.CharField(max_length=100, required=False,
                           help_text="To tell keys apart, e.g. “staging”.")
    # Offered on the page only to roles that manage keys; declared for everyone, so that a
    # forged "service" from another role reaches the service and is refused there (403),
    # instead of being dropped and quietly making a member's key.
    service = forms.BooleanField(
        label="Service key (no member's budget; for servers and CI)", required=False)


class MemberBudgetForm(forms.Form):
    lifetime_cap_usd = forms.CharField(
        label="Lifetime cap (USD)", required=False, max_length=32,
        help_text="Most this member may ever spend in the organization. Empty: no cap.")
    monthly_cap_usd = forms.CharField(
        label="Monthly cap (USD)", required=False, max_length=32,
        help_text="Per calendar month, UTC. Empty: no cap.")

    @classmethod
    def initial_for(cls, lifetime_micros: int | None,
                    monthly_micros: int | None) -> dict[str, str]:
        return {"lifetime_cap_usd": _usd_input(lifetime_micros),
                "monthly_cap_usd": _usd_input(monthly_micros)}

    def clean_lifetime_cap_usd(self) -> int | None:
        raw = self.cleaned_data["lifetime_cap_usd"].strip()
        return parse_usd(raw) if raw else None

    def clean_monthly_cap_usd(self) -> int | None:
        raw = self.cleaned_data["monthly_cap_usd"].strip()
        return parse_usd(raw) if raw else None


class OrganizationUsageFilterForm(UsageFilterForm):
    """The usage page's filters, plus the member (for roles that see everyone's usage).
    Refused requests are counted per user, not per wallet, so they are not offered here."""

    member = forms.IntegerField(required=False, min_value=1)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["status"].choices = [("", "Any status"), *UsageRecord.Status.choices]

    def member_id(self) -> int | None:
        return self.cleaned_data.get("member") if self.is_valid() else None
