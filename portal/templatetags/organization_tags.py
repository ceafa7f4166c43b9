"""The navigation's account switcher: the personal account and each organization the
signed-in user belongs to, the one chosen this session selected."""

from __future__ import annotations

from typing import Any

from django import template

from organizations.selectors import memberships_of
from portal.views.organizations.access import SESSION_KEY

register = template.Library()


@register.inclusion_tag("portal/organizations/_switcher.html", takes_context=True)
def organization_switcher(context: template.Context) -> dict[str, Any]:
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"show": False}
    memberships = list(memberships_of(user=user))
    current = request.session.get(SESSION_KEY)
    # A choice kept from an organization the user has since left is no choice.
    chosen = next((m for m in memberships if m.organization_id == current), None)
    return {"show": True, "memberships": memberships, "chosen": chosen,
            "csrf_token": context.get("csrf_token")}
