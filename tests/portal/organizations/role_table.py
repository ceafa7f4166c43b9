"""Who may do what in an organization, for every organization page and /api/orgs endpoint:
one table, run over the portal (``test_roles.py``) and the API
(``tests/portal/api/organizations/test_roles.py``).

Each row names the roles allowed and the status they get; any other member gets 403 (their
own organization, an action their role forbids) and the outsider, a member of another
organization only, gets 404 for every row (an organization one is not in cannot be told
apart from one that does not exist).

{placeholders} in paths and bodies are filled from ``Team.placeholders`` for the acting
role: {me} and {my_key} are the actor's own. Card payments are on, against a local fake of
Stripe (``org_stripe``), so the money rows answer as they would in production: a redirect
to Stripe's page, a 201 with its URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OWNER, ADMIN, BILLING, MEMBER = "owner", "admin", "billing", "member"
OUTSIDER = "outsider"
MEMBERS = frozenset({OWNER, ADMIN, BILLING, MEMBER})
MANAGERS = frozenset({OWNER, ADMIN})  # members, keys, budgets
MONEY = frozenset({OWNER, BILLING})  # top-ups, ledger, receipts, statements, auto top-up
SEE_ALL = frozenset({OWNER, ADMIN, BILLING})  # everyone's usage and budgets
OWNERS = frozenset({OWNER})
ACTORS = (OWNER, ADMIN, BILLING, MEMBER, OUTSIDER)


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    allowed: frozenset[str]
    ok: int
    data: dict[str, Any] | None = None
    # A status other than ``ok`` for an allowed role, and why.
    exceptions: dict[str, int] = field(default_factory=dict)

    def expected(self, role: str) -> int:
        if role == OUTSIDER:
            return 404
        if role in self.allowed:
            return self.exceptions.get(role, self.ok)
        return 403

    def fill(self, values: dict[str, object]) -> tuple[str, dict[str, Any] | None]:
        def filled(value: Any) -> Any:
            return value.format(**values) if isinstance(value, str) else value

        data = (None if self.data is None
                else {filled(key): filled(value) for key, value in self.data.items()})
        return self.path.format(**values), data


ORG = "/orgs/{org}"

PAGES = [
    Case("overview", "get", f"{ORG}/", MEMBERS, 200),
    Case("members", "get", f"{ORG}/members/", MEMBERS, 200),
    Case("change a role", "post", f"{ORG}/members/{{target}}/role/", MANAGERS, 302,
         {"m{target}-role": "billing"}),
    Case("remove a member", "post", f"{ORG}/members/{{target}}/remove/", MANAGERS, 302),
    # The last owner is answered 302 too, back to the members page with the reason.
    Case("leave", "post", f"{ORG}/leave/", MEMBERS, 302),
    Case("leave by removing oneself", "post", f"{ORG}/members/{{me}}/remove/", MEMBERS, 302),
    Case("transfer ownership", "post", f"{ORG}/transfer/", OWNERS, 302,
         {"user": "{target}"}),
    Case("delete page", "get", f"{ORG}/delete/", OWNERS, 200),
    Case("delete", "post", f"{ORG}/delete/", OWNERS, 302, {"confirm": "{name}"}),
    Case("invitations", "get", f"{ORG}/invitations/", MANAGERS, 200),
    Case("invite", "post", f"{ORG}/invitations/", MANAGERS, 302,
         {"email": "new@example.com", "role": "member"}),
    Case("revoke an invitation", "post", f"{ORG}/invitations/{{invitation}}/revoke/",
         MANAGERS, 302),
    Case("keys", "get", f"{ORG}/keys/", MEMBERS, 200),
    Case("create an own key", "post", f"{ORG}/keys/", MEMBERS, 200, {"name": "mine"}),
    Case("create a service key", "post", f"{ORG}/keys/", MANAGERS, 200,
         {"name": "ci", "service": "on"}),
    Case("revoke page of an own key", "get", f"{ORG}/keys/{{my_key}}/revoke/", MEMBERS, 200),
    Case("revoke an own key", "post", f"{ORG}/keys/{{my_key}}/revoke/", MEMBERS, 302),
    Case("revoke page of another's key", "get", f"{ORG}/keys/{{target_key}}/revoke/",
         MANAGERS, 200),
    Case("revoke another's key", "post", f"{ORG}/keys/{{target_key}}/revoke/", MANAGERS,
         302),
    Case("revoke a service key", "post", f"{ORG}/keys/{{service_key}}/revoke/", MANAGERS,
         302),
    Case("budgets", "get", f"{ORG}/budgets/", MEMBERS, 200),
    Case("budget form", "get", f"{ORG}/budgets/{{target}}/", MANAGERS, 200),
    Case("set a budget", "post", f"{ORG}/budgets/{{target}}/", MANAGERS, 302,
         {"monthly_cap_usd": "5.00", "lifetime_cap_usd": ""}),
    Case("usage", "get", f"{ORG}/usage/", MEMBERS, 200),
    Case("another member's usage", "get", f"{ORG}/usage/?member={{target}}", SEE_ALL, 200),
    Case("usage CSV", "get", f"{ORG}/usage.csv", MEMBERS, 200),
    Case("another member's usage CSV", "get", f"{ORG}/usage.csv?member={{target}}", SEE_ALL,
         200),
    Case("billing", "get", f"{ORG}/billing/", MONEY, 200),
    Case("redeem a voucher", "post", f"{ORG}/billing/voucher/", MONEY, 302,
         {"code": "{voucher}"}),
    # To Stripe's page: the organization's wallet is credited by the webhook.
    Case("pay by card", "post", f"{ORG}/billing/checkout/", MONEY, 302, {"amount_usd": "20"}),
    Case("auto top-up", "get", f"{ORG}/billing/auto/", MONEY, 200),
    Case("set auto top-up", "post", f"{ORG}/billing/auto/", MONEY, 302,
         {"threshold_usd": "5", "amount_usd": "20", "monthly_ceiling_usd": "100"}),
    Case("save a card for auto top-up", "post", f"{ORG}/billing/auto/card/", MONEY, 302),
    Case("back from saving a card", "get",
         f"{ORG}/billing/auto/card/done/?session_id=cs_test_unknown", MONEY, 302),
    Case("pay by card and keep the card", "post", f"{ORG}/billing/auto/pay-and-save/", MONEY,
         302, {"amount_usd": "20"}),
    Case("a receipt", "get", f"{ORG}/billing/receipts/{{receipt}}/", MONEY, 200),
    Case("a receipt as PDF", "get", f"{ORG}/billing/receipts/{{receipt}}/receipt.pdf", MONEY,
         200),
    Case("billing details", "get", f"{ORG}/billing/details/", MONEY, 200),
    Case("set billing details", "post", f"{ORG}/billing/details/", MONEY, 302,
         {"billing_name": "Acme Ltd", "billing_address": "1 Main Street\nSpringfield"}),
    Case("statement", "get", f"{ORG}/billing/statement/", MONEY, 200),
    Case("statement CSV", "get", f"{ORG}/billing/statement.csv", MONEY, 200),
]

API = "/api/orgs/{org}"

API_ENDPOINTS = [
    Case("organization", "get", API, MEMBERS, 200),
    Case("delete the organization", "delete", API, OWNERS, 204),
    Case("transfer ownership", "post", f"{API}/transfer", OWNERS, 200,
         {"user_id": "{target}"}),
    Case("members", "get", f"{API}/members", MEMBERS, 200),
    Case("change a role", "patch", f"{API}/members/{{target}}", MANAGERS, 200,
         {"role": "billing"}),
    Case("remove a member", "delete", f"{API}/members/{{target}}", MANAGERS, 204),
    Case("leave", "delete", f"{API}/members/{{me}}", MEMBERS, 204,
         exceptions={OWNER: 400}),  # the last owner stays: 400 last_owner
    Case("invitations", "get", f"{API}/invitations", MANAGERS, 200),
    Case("invite", "post", f"{API}/invitations", MANAGERS, 201,
         {"email": "new@example.com", "role": "member"}),
    Case("revoke an invitation", "delete", f"{API}/invitations/{{invitation}}", MANAGERS,
         204),
    Case("keys", "get", f"{API}/keys", MEMBERS, 200),
    Case("create an own key", "post", f"{API}/keys", MEMBERS, 201, {"name": "mine"}),
    Case("create a service key", "post", f"{API}/keys", MANAGERS, 201,
         {"name": "ci", "service": True}),
    Case("an own key", "get", f"{API}/keys/{{my_key}}", MEMBERS, 200),
    Case("revoke an own key", "delete", f"{API}/keys/{{my_key}}", MEMBERS, 200),
    Case("another's key", "get", f"{API}/keys/{{target_key}}", MANAGERS, 200),
    Case("revoke another's key", "delete", f"{API}/keys/{{target_key}}", MANAGERS, 200),
    Case("revoke a service key", "delete", f"{API}/keys/{{service_key}}", MANAGERS, 200),
    Case("budgets", "get", f"{API}/budgets", MEMBERS, 200),
    Case("an own budget", "get", f"{API}/budgets/{{me}}", MEMBERS, 200),
    Case("another's budget", "get", f"{API}/budgets/{{target}}", SEE_ALL, 200),
    Case("set a budget", "put", f"{API}/budgets/{{target}}", MANAGERS, 200,
         {"lifetime_cap_usd": None, "monthly_cap_usd": "5.00"}),
    Case("usage", "get", f"{API}/usage", MEMBERS, 200),
    Case("another member's usage", "get", f"{API}/usage?member={{target}}", SEE_ALL, 200),
    Case("usage CSV", "get", f"{API}/usage?format=csv", MEMBERS, 200),
    Case("usage per day", "get", f"{API}/usage/daily", MEMBERS, 200),
    Case("usage per member", "get", f"{API}/usage/members", MEMBERS, 200),
    Case("another member's usage per member", "get",
         f"{API}/usage/members?member={{target}}", SEE_ALL, 200),
    Case("usage per key", "get", f"{API}/usage/keys", MEMBERS, 200),
    Case("usage per model", "get", f"{API}/usage/models", MEMBERS, 200),
    Case("balance", "get", f"{API}/balance", MEMBERS, 200),
    Case("ledger", "get", f"{API}/ledger", MONEY, 200),
    Case("redeem a voucher", "post", f"{API}/vouchers/redeem", MONEY, 200,
         {"code": "{voucher}"}),
    Case("card top-ups", "get", f"{API}/topups", MONEY, 200),
    Case("a card top-up", "get", f"{API}/topups/{{topup}}", MONEY, 200),
    Case("pay by card", "post", f"{API}/topups/checkout", MONEY, 201,
         {"amount_usd": "20.00", "success_url": "https://example.com/paid",
          "cancel_url": "https://example.com/billing"}),
    Case("auto top-up", "get", f"{API}/auto-topup", MONEY, 200),
    Case("set auto top-up", "put", f"{API}/auto-topup", MONEY, 200,
         {"enabled": False, "threshold_usd": "5", "amount_usd": "20",
          "monthly_ceiling_usd": "100"}),
    Case("save a card for auto top-up", "post", f"{API}/auto-topup/card", MONEY, 201,
         {"success_url": "https://example.com/card?s={{CHECKOUT_SESSION_ID}}",
          "cancel_url": "https://example.com/billing"}),
    Case("receipts", "get", f"{API}/receipts", MONEY, 200),
    Case("a receipt", "get", f"{API}/receipts/{{receipt}}", MONEY, 200),
]


def cases(table: list[Case]) -> list[tuple[Case, str]]:
    return [(case, role) for case in table for role in ACTORS]


def case_id(value: object) -> str:
    return value.name.replace(" ", "-") if isinstance(value, Case) else str(value)


# Objects of another organization named under one's own: 404 even for its owner, who may do
# everything there, so the answer can only come from the object not being this one's.
FOREIGN_PAGES = [
    Case("another organization's key", "get", f"{ORG}/keys/{{foreign_key}}/revoke/",
         frozenset(), 404),
    Case("revoke another organization's key", "post",
         f"{ORG}/keys/{{foreign_key}}/revoke/", frozenset(), 404),
    Case("another organization's invitation", "post",
         f"{ORG}/invitations/{{foreign_invitation}}/revoke/", frozenset(), 404),
    Case("a stranger's role", "post", f"{ORG}/members/{{outsider}}/role/", frozenset(), 404,
         {"m{outsider}-role": "admin"}),
    Case("remove a stranger", "post", f"{ORG}/members/{{outsider}}/remove/", frozenset(),
         404),
    Case("a stranger's budget", "get", f"{ORG}/budgets/{{outsider}}/", frozenset(), 404),
    Case("usage of a stranger", "get", f"{ORG}/usage/?member={{outsider}}", frozenset(),
         404),
    Case("usage of another organization's key", "get", f"{ORG}/usage/?key={{foreign_key}}",
         frozenset(), 404),
    Case("CSV of another organization's key", "get", f"{ORG}/usage.csv?key={{foreign_key}}",
         frozenset(), 404),
    Case("another organization's receipt", "get",
         f"{ORG}/billing/receipts/{{foreign_receipt}}/", frozenset(), 404),
    Case("another organization's receipt as PDF", "get",
         f"{ORG}/billing/receipts/{{foreign_receipt}}/receipt.pdf", frozenset(), 404),
    Case("one's own receipt under the organization", "get",
         f"{ORG}/billing/receipts/{{personal_receipt}}/", frozenset(), 404),
]

FOREIGN_API = [
    Case("another organization's key", "get", f"{API}/keys/{{foreign_key}}", frozenset(),
         404),
    Case("revoke another organization's key", "delete", f"{API}/keys/{{foreign_key}}",
         frozenset(), 404),
    Case("another organization's invitation", "delete",
         f"{API}/invitations/{{foreign_invitation}}", frozenset(), 404),
    Case("a stranger's role", "patch", f"{API}/members/{{outsider}}", frozenset(), 404,
         {"role": "admin"}),
    Case("remove a stranger", "delete", f"{API}/members/{{outsider}}", frozenset(), 404),
    Case("a stranger's budget", "get", f"{API}/budgets/{{outsider}}", frozenset(), 404),
    Case("set a stranger's budget", "put", f"{API}/budgets/{{outsider}}", frozenset(), 404,
         {"lifetime_cap_usd": None, "monthly_cap_usd": None}),
    Case("usage of a stranger", "get", f"{API}/usage?member={{outsider}}", frozenset(), 404),
    Case("usage of another organization's key", "get", f"{API}/usage?key={{foreign_key}}",
         frozenset(), 404),
    Case("another organization by id", "get", "/api/orgs/{other_org}", frozenset(), 404),
    Case("another organization's receipt", "get", f"{API}/receipts/{{foreign_receipt}}",
         frozenset(), 404),
    Case("one's own receipt under the organization", "get",
         f"{API}/receipts/{{personal_receipt}}", frozenset(), 404),
    Case("another organization's card top-up", "get", f"{API}/topups/{{foreign_topup}}",
         frozenset(), 404),
    Case("one's own card top-up under the organization", "get",
         f"{API}/topups/{{personal_topup}}", frozenset(), 404),
]
