"""``router staff reset-2fa EMAIL``: a staff member who lost their authenticator app (and
their recovery codes) sets up a new one at their next admin sign-in."""

from __future__ import annotations

import pytest
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.two_factor.services import (
    authenticator_enrolment_confirm,
    authenticator_enrolment_start,
)
from tests.router_admin.cli import refused, router
from tests.staff import authenticator_code, password_sign_in, staff_sign_in

PASSWORD = "a-long-staff-passphrase"


@pytest.fixture
def ops(make_user):
    user = make_user(email="ops@example.com", password=PASSWORD, is_staff=True)
    device = authenticator_enrolment_start(user=user)
    authenticator_enrolment_confirm(user=user, code=authenticator_code(device))
    return user


def test_reset_2fa_removes_the_devices_and_the_next_sign_in_sets_up_a_new_app(client, ops):
    StaticToken.objects.filter(device__user=ops).first().delete()  # one code used already

    lines = router("staff", "reset-2fa", "OPS@example.com")

    assert lines == ["Removed 1 authenticator app(s) and 9 unused recovery code(s) of "
                     "ops@example.com; they set up a new app at their next admin sign-in."]
    assert not TOTPDevice.objects.filter(user=ops).exists()
    assert not StaticDevice.objects.filter(user=ops).exists()

    password_sign_in(client, ops.email, PASSWORD)
    page = client.get("/admin/", follow=True)
    assert page.redirect_chain[-1] == ("/admin/two-factor/enrol/?next=/admin/", 302)
    assert "Set up two-factor sign-in" in page.text


def test_a_session_verified_before_the_reset_is_verified_no_more(client, ops):
    staff_sign_in(client, ops)
    assert client.get("/admin/").status_code == 200

    router("staff", "reset-2fa", ops.email)

    assert client.get("/admin/")["Location"] == "/admin/two-factor/?next=/admin/"


def test_reset_2fa_says_when_there_was_nothing_to_remove(make_user):
    make_user(email="new@example.com", password=PASSWORD, is_staff=True)
    assert router("staff", "reset-2fa", "new@example.com") == [
        "new@example.com had no authenticator app and no recovery codes; they set up an app "
        "at their next admin sign-in."]


@pytest.mark.django_db
def test_reset_2fa_of_an_unknown_email_is_refused():
    assert refused("staff", "reset-2fa", "ghost@example.com",
                   match="No user has the email") == "No user has the email 'ghost@example.com'."
