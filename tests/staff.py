"""Staff in tests: signed in to the admin as after both factors, for tests about the admin's
pages; and the steps of a real sign-in, for tests about signing in."""

from __future__ import annotations

from django.test import Client
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User


def staff_sign_in(client: Client, user: User) -> Client:
    """Log ``user`` in with a session verified by their authenticator (made if they have
    none), as the two-factor page leaves it."""
    client.force_login(user)
    device = (TOTPDevice.objects.filter(user=user, confirmed=True).first()
              or TOTPDevice.objects.create(user=user, name="test authenticator"))
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return client


def password_sign_in(client: Client, email: str, password: str) -> None:
    """Give the admin's login form the email and password, as a person would."""
    response = client.post("/admin/login/?next=/admin/", {
        "username": email, "password": password, "next": "/admin/"})
    assert response.status_code == 302, "the password was refused"


def authenticator_code(device: TOTPDevice) -> str:
    """The code the staff member's authenticator app shows now, by django-otp's own TOTP
    function on the device's secret."""
    code = totp(device.bin_key, device.step, device.t0, device.digits, device.drift)
    return f"{code:0{device.digits}d}"
