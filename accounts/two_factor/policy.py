"""Who must give a second factor, and whether this session has. Imports no model: the admin
site's module (loaded with the app registry) uses it."""

from __future__ import annotations

from typing import Any

from django.conf import settings


def second_factor_enforced() -> bool:
    """``ROUTER_STAFF_2FA``: on whenever DEBUG is off."""
    return bool(settings.ROUTER_STAFF_2FA)


def second_factor_passed(user: Any) -> bool:
    """Whether this request's user may use what staff may use: enforcement is off, or the
    session was verified by one of the user's devices (django-otp's middleware)."""
    if not second_factor_enforced():
        return True
    # Fail closed without django-otp's middleware (router_admin.E001 says so at start-up).
    is_verified = getattr(user, "is_verified", None)
    return callable(is_verified) and bool(is_verified())


def awaiting_second_factor(user: Any) -> bool:
    """A staff member who gave the password and still owes a code."""
    return (user.is_authenticated and user.is_active and user.is_staff
            and not second_factor_passed(user))
