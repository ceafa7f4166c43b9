"""An organization with one member of each role (and a second owner), and a stranger who
runs another organization: who the billing tests of organization wallets are tried with."""

from __future__ import annotations

from dataclasses import dataclass

from accounts.models import User
from accounts.services import user_create
from billing.models import Wallet
from organizations.models import Organization, Role
from organizations.services import invitation_accept, invitation_create, organization_create


@dataclass
class Acme:
    organization: Organization
    other: Organization  # the stranger's own
    people: dict[str, User]  # owner, co-owner, admin, billing, member, outsider

    @property
    def wallet(self) -> Wallet:
        return Wallet.objects.get(organization=self.organization)

    @property
    def other_wallet(self) -> Wallet:
        return Wallet.objects.get(organization=self.other)


def acme_made() -> Acme:
    people = {name: user_create(email=f"{name}@acme.example")
              for name in ("owner", "co-owner", "admin", "billing", "member", "outsider")}
    organization = organization_create(name="Acme", owner=people["owner"])
    for name, role in (("co-owner", Role.OWNER), ("admin", Role.ADMIN),
                       ("billing", Role.BILLING), ("member", Role.MEMBER)):
        _, token = invitation_create(organization=organization, actor=people["owner"],
                                     email=people[name].email, role=role)
        invitation_accept(token=token, user=people[name])
    other = organization_create(name="Other Co", owner=people["outsider"])
    return Acme(organization=organization, other=other, people=people)
