"""``router staff reset-2fa``."""

from __future__ import annotations

from accounts.selectors import user_get_by_email
from accounts.two_factor.services import second_factor_reset
from audit.actors import Actor
from router_admin.cli.base import Options, Subparsers, group, subcommand


def add_parsers(subparsers: Subparsers) -> None:
    staff = group(subparsers, "staff", help="Manage staff's sign-in to the admin.")
    reset = subcommand(
        staff, "reset-2fa", handler=staff_reset_2fa_command,
        help="Delete a staff member's authenticator app and recovery codes: their next "
             "admin sign-in sets up a new app.")
    reset.add_argument("email")


def staff_reset_2fa_command(options: Options) -> list[str]:
    user = user_get_by_email(email=options["email"])
    reset = second_factor_reset(user=user, actor=Actor.cli())
    if not reset.authenticators and not reset.recovery_codes:
        return [f"{user.email} had no authenticator app and no recovery codes; they set up "
                "an app at their next admin sign-in."]
    lines = [f"Removed {reset.authenticators} authenticator app(s) and "
             f"{reset.recovery_codes} unused recovery code(s) of {user.email}; they set up a "
             "new app at their next admin sign-in."]
    if not user.is_staff:
        lines.append(f"Note: {user.email} is not staff, so the admin is closed to them anyway.")
    return lines
