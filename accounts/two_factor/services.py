"""Writes for staff's second factor: enrol an authenticator app, check a code, replace the
recovery codes, reset. Devices are django-otp's: ``TOTPDevice`` (the app's secret, with
replay protection and back-off after wrong codes) and ``StaticDevice`` (recovery codes,
each deleted when used)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django_otp import devices_for_user
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.errors import AccountsError
from accounts.models import User
from audit.actors import Actor
from audit.services import audit_record

RECOVERY_CODE_COUNT = 10
# 10 characters of base32 (50 bits) each; a wrong guess costs ever longer waits (django-otp
# doubles the wait after each), so that is far out of reach. Fits StaticToken.token (16).
_RECOVERY_CODE_LENGTH = 10
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
_AUTHENTICATOR_CODE = re.compile(r"\d{6}")
AUTHENTICATOR_NAME = "Authenticator app"
RECOVERY_CODES_NAME = "Recovery codes"


class AlreadyEnrolled(AccountsError):
    pass


@dataclass(frozen=True)
class CodeCheck:
    device: Device | None  # the device that accepted the code; None: refused
    # Set when earlier wrong codes make the device refuse to look at any code until then.
    retry_at: datetime | None = None


@dataclass(frozen=True)
class Enrolment:
    device: TOTPDevice | None  # the confirmed authenticator; None: the code was refused
    # Shown once: nothing shows them again (the admin hides them, the CLI never prints them).
    recovery_codes: list[str] = field(default_factory=list)
    retry_at: datetime | None = None  # as in CodeCheck


@dataclass(frozen=True)
class TwoFactorReset:
    authenticators: int
    recovery_codes: int


def recovery_code_format(code: str) -> str:
    """``abcdefghij`` -> ``abcde-fghij``, as shown to people."""
    half = len(code) // 2
    return f"{code[:half]}-{code[half:]}"


def recovery_code_normalize(code: str) -> str:
    """What staff type back: case, spaces and dashes do not matter."""
    return re.sub(r"[^a-z0-9]", "", code.lower())


def second_factor_check(*, user: User, code: str) -> CodeCheck:
    """Check a code from the user's authenticator app (six digits) or one of their recovery
    codes (anything else), which is then used up."""
    compact = re.sub(r"\s", "", code)
    if _AUTHENTICATOR_CODE.fullmatch(compact):
        model: type[Device] = TOTPDevice
        token = compact
    else:
        model, token = StaticDevice, recovery_code_normalize(code)
    # Only the device the code's shape names is tried: a recovery code tried on the
    # authenticator too would count there as a wrong code and slow the next real one down.
    with transaction.atomic():
        # Locked: two requests with one recovery code (or one authenticator code, which
        # may be used once) cannot both see it unused.
        device = (model.objects.devices_for_user(user, confirmed=True)
                  .select_for_update().order_by("pk").first())
        if device is None:
            return CodeCheck(device=None)
        return _check(device, token)


def authenticator_enrolment_start(*, user: User) -> TOTPDevice:
    """The authenticator the user is enrolling, with the secret to put in their app.

    The same one until it is confirmed, so a reloaded page shows the secret already
    scanned."""
    with transaction.atomic():
        _user_lock(user)
        if TOTPDevice.objects.devices_for_user(user, confirmed=True).exists():
            raise AlreadyEnrolled(f"{user.email} already has an authenticator app.")
        pending = (TOTPDevice.objects.devices_for_user(user, confirmed=False)
                   .order_by("pk").first())
        return pending or TOTPDevice.objects.create(user=user, name=AUTHENTICATOR_NAME,
                                                    confirmed=False)


def authenticator_enrolment_confirm(*, user: User, code: str) -> Enrolment:
    """Confirm the pending authenticator with a code it made, and issue recovery codes."""
    with transaction.atomic():
        _user_lock(user)
        # Checked under the user's lock: a password alone must never add a second
        # authenticator to an account that has one, not even in a race with its enrolment.
        if TOTPDevice.objects.devices_for_user(user, confirmed=True).exists():
            raise AlreadyEnrolled(f"{user.email} already has an authenticator app.")
        device = (TOTPDevice.objects.devices_for_user(user, confirmed=False)
                  .select_for_update().order_by("pk").first())
        if device is None:
            return Enrolment(device=None)
        check = _check(device, re.sub(r"\s", "", code))
        if check.device is None:
            return Enrolment(device=None, retry_at=check.retry_at)
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        TOTPDevice.objects.filter(user=user, confirmed=False).delete()
        return Enrolment(device=device, recovery_codes=recovery_codes_replace(user=user))


def recovery_codes_replace(*, user: User) -> list[str]:
    """New recovery codes for the user; the old ones stop working. Returned formatted, this
    once."""
    with transaction.atomic():
        StaticDevice.objects.filter(user=user).delete()
        device = StaticDevice.objects.create(user=user, name=RECOVERY_CODES_NAME)
        codes = [_recovery_code_new() for _ in range(RECOVERY_CODE_COUNT)]
        StaticToken.objects.bulk_create(StaticToken(device=device, token=code)
                                        for code in codes)
    return [recovery_code_format(code) for code in codes]


def second_factor_reset(*, user: User, actor: Actor | None = None) -> TwoFactorReset:
    """Delete every second-factor device of the user: their next admin sign-in enrols
    again, and a session verified by a deleted device is verified no more. With an
    ``actor`` (staff, the CLI), the reset is on the audit trail."""
    with transaction.atomic():
        _user_lock(user)
        reset = TwoFactorReset(
            authenticators=TOTPDevice.objects.devices_for_user(user, confirmed=True).count(),
            recovery_codes=StaticToken.objects.filter(device__user=user).count(),
        )
        # Every kind of device installed, not only these two, so none is left to sign in with.
        for device in list(devices_for_user(user, confirmed=None)):
            device.delete()
        if actor is not None and (reset.authenticators or reset.recovery_codes):
            audit_record(actor=actor, action="user.second_factor_reset", obj=user,
                         before={"authenticators": reset.authenticators,
                                 "recovery_codes": reset.recovery_codes},
                         after={"authenticators": 0, "recovery_codes": 0})
    return reset


def _check(device: Device, token: str) -> CodeCheck:
    # django-otp doubles the wait after each wrong code; a device still waiting refuses to
    # look at any code, a right one too.
    allowed, refusal = device.verify_is_allowed()
    if not allowed:
        return CodeCheck(device=None, retry_at=(refusal or {}).get("locked_until"))
    return CodeCheck(device=device if device.verify_token(token) else None)


def _recovery_code_new() -> str:
    return "".join(secrets.choice(_BASE32) for _ in range(_RECOVERY_CODE_LENGTH))


def _user_lock(user: User) -> None:
    # Enrolment, its confirmation and a reset of one user take turns.
    User.objects.select_for_update().filter(pk=user.pk).first()
