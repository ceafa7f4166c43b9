"""What each role may do in an organization: one table, read by the services, the portal
and the API alike."""

from __future__ import annotations

from enum import StrEnum

from organizations.models import Role


class Action(StrEnum):
    VIEW = "view"  # the organization's name, its members list, their own usage and keys
    MANAGE_MEMBERS = "manage_members"  # invite, remove, change roles (not to or from owner)
    MANAGE_KEYS = "manage_keys"  # every member's keys, and service keys
    MANAGE_BUDGETS = "manage_budgets"
    VIEW_ALL_USAGE = "view_all_usage"  # usage by member, key and model
    BILLING = "billing"  # top-ups, statements, receipts, billing details, auto top-up
    OWN = "own"  # delete the organization, transfer ownership, make or unmake owners


ALLOWED: dict[str, frozenset[Action]] = {
    Role.OWNER: frozenset(Action),
    Role.ADMIN: frozenset({Action.VIEW, Action.MANAGE_MEMBERS, Action.MANAGE_KEYS,
                           Action.MANAGE_BUDGETS, Action.VIEW_ALL_USAGE}),
    Role.BILLING: frozenset({Action.VIEW, Action.BILLING, Action.VIEW_ALL_USAGE}),
    Role.MEMBER: frozenset({Action.VIEW}),
}


def may(role: str | None, action: Action) -> bool:
    return role is not None and action in ALLOWED.get(role, frozenset())
