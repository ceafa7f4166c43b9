"""Staff sign in to the admin with a password and a second factor: a code from an
authenticator app, or a single-use recovery code. A staff member without an app sets one up
at their first sign-in. ``ROUTER_STAFF_2FA`` (on whenever DEBUG is off) turns it on."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from datetime import timedelta

import pytest
from django.contrib import admin
from django.urls import NoReverseMatch, URLPattern, URLResolver, reverse
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from accounts.two_factor.selectors import recovery_codes_left
from accounts.two_factor.services import (
    AlreadyEnrolled,
    authenticator_enrolment_confirm,
    authenticator_enrolment_start,
    recovery_code_normalize,
)
from tests.router_admin.csp import EXPECTED_POLICY, inline_code, policy_directives
from tests.staff import authenticator_code, password_sign_in, staff_sign_in

PASSWORD = "a-long-staff-passphrase"
VERIFY_URL = "/admin/two-factor/"
ENROL_URL = "/admin/two-factor/enrol/"


@pytest.fixture
def ops(make_user) -> User:
    return make_user(email="ops@example.com", password=PASSWORD, is_staff=True,
                     is_superuser=True)


@pytest.fixture
def enrolled(ops) -> dict:
    """``ops`` with an authenticator app and recovery codes, set up through the services the
    enrolment page calls."""
    device = authenticator_enrolment_start(user=ops)
    enrolment = authenticator_enrolment_confirm(user=ops, code=authenticator_code(device))
    # The enrolment used this time step's code; sign-ins in the test use the next one.
    TOTPDevice.objects.filter(pk=device.pk).update(last_t=-1)
    return {"device": TOTPDevice.objects.get(pk=device.pk),
            "recovery_codes": enrolment.recovery_codes}


def _admin_pages() -> list[str]:
    """The index, every registered model's list, and every other admin page that takes no
    argument (add forms, app indexes, custom views)."""
    urls = [reverse("admin:index")]
    urls += [reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
             for model in admin.site._registry]

    def walk(patterns) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns)
            elif isinstance(pattern, URLPattern) and pattern.name:
                # Those that take an argument (an object's pages) do not reverse.
                with contextlib.suppress(NoReverseMatch):
                    urls.append(reverse(f"admin:{pattern.name}"))

    walk(admin.site.get_urls())
    return sorted({url for url in urls if not url.startswith(VERIFY_URL)})


def _secret_shown(html: str) -> str:
    return re.search(r'class="two-factor-secret"><code>([A-Z2-7 ]+)</code>', html)[1]


def _recovery_codes_shown(html: str) -> list[str]:
    return re.findall(r"<li><code>([a-z2-7]{5}-[a-z2-7]{5})</code></li>", html)


def _reaches_the_admin(client) -> bool:
    return client.get("/admin/").status_code == 200


# --- the password alone --------------------------------------------------------------------

@pytest.mark.parametrize("has_authenticator", [True, False])
def test_a_staff_password_alone_reaches_no_admin_page(client, ops, has_authenticator,
                                                      request):
    if has_authenticator:
        request.getfixturevalue("enrolled")
    password_sign_in(client, ops.email, PASSWORD)
    pages = _admin_pages()
    assert len(pages) > 20
    assert "/admin/billing/wallet/" in pages
    assert "/admin/otp_totp/totpdevice/" in pages

    for url in pages:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(f"{VERIFY_URL}?next="), url
    # An object's own page too.
    response = client.get(reverse("admin:accounts_user_change", args=[ops.pk]))
    assert response["Location"].startswith(VERIFY_URL)


def test_a_staff_password_alone_cannot_post_to_the_admin(client, ops):
    password_sign_in(client, ops.email, PASSWORD)
    response = client.post("/admin/accounts/user/add/", {
        "email": "intruder@example.com", "password1": "x-Very-long-1", "password2":
        "x-Very-long-1"})
    assert response.status_code == 302
    assert response["Location"].startswith(VERIFY_URL)
    assert not User.objects.filter(email="intruder@example.com").exists()


def test_the_login_page_sends_a_staff_member_who_gave_the_password_to_the_code(client, ops):
    password_sign_in(client, ops.email, PASSWORD)
    response = client.get("/admin/login/?next=/admin/billing/wallet/")
    assert response["Location"] == f"{VERIFY_URL}?next=/admin/billing/wallet/"


def test_a_staff_password_alone_does_not_read_the_metrics(client, ops, settings):
    settings.ROUTER_METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]  # not the test client's
    password_sign_in(client, ops.email, PASSWORD)
    assert client.get("/metrics").status_code == 403

    staff_sign_in(client, ops)
    assert client.get("/metrics").status_code == 200


# --- the authenticator app -----------------------------------------------------------------

def test_staff_with_a_right_authenticator_code_reach_the_admin(client, ops, enrolled):
    password_sign_in(client, ops.email, PASSWORD)
    page = client.get(f"{VERIFY_URL}?next=/admin/billing/wallet/")
    assert page.status_code == 200
    assert "six-digit code" in page.text
    password_session = client.cookies["sessionid"].value

    response = client.post(f"{VERIFY_URL}?next=/admin/billing/wallet/",
                           {"code": authenticator_code(enrolled["device"])})

    assert response.status_code == 302
    assert response["Location"] == "/admin/billing/wallet/"
    # The session that gave the password is not the one that holds the second factor.
    assert client.cookies["sessionid"].value != password_session
    for url in ["/admin/", "/admin/billing/wallet/", "/admin/accounts/user/"]:
        assert client.get(url).status_code == 200, url


def test_a_wrong_code_is_refused(client, ops, enrolled):
    password_sign_in(client, ops.email, PASSWORD)
    right = authenticator_code(enrolled["device"])
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"

    response = client.post(VERIFY_URL, {"code": wrong})

    assert response.status_code == 200
    assert "That code is not right" in response.text
    assert not _reaches_the_admin(client)


def test_after_wrong_codes_even_the_right_one_waits_for_the_back_off(client, ops, enrolled):
    password_sign_in(client, ops.email, PASSWORD)
    device = enrolled["device"]
    right = authenticator_code(device)
    client.post(VERIFY_URL, {"code": f"{(int(right) + 1) % 1_000_000:06d}"})
    assert TOTPDevice.objects.get(pk=device.pk).throttling_failure_count == 1
    # As after four wrong codes in a row (django-otp doubles the wait each time: 8 s now),
    # so that the test does not depend on how fast it runs.
    TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_count=4,
                                                   throttling_failure_timestamp=timezone.now())

    refused = client.post(VERIFY_URL, {"code": right})
    assert "Too many wrong codes: try again in 8 seconds." in refused.text
    assert not _reaches_the_admin(client)

    TOTPDevice.objects.filter(pk=device.pk).update(
        throttling_failure_timestamp=timezone.now() - timedelta(seconds=9))
    assert client.post(VERIFY_URL, {"code": right}).status_code == 302
    assert _reaches_the_admin(client)


def test_an_authenticator_code_works_once(client, ops, enrolled, make_user):
    code = authenticator_code(enrolled["device"])
    password_sign_in(client, ops.email, PASSWORD)
    assert client.post(VERIFY_URL, {"code": code}).status_code == 302

    client.logout()
    password_sign_in(client, ops.email, PASSWORD)
    assert client.post(VERIFY_URL, {"code": code}).status_code == 200
    assert not _reaches_the_admin(client)


def test_the_code_page_never_leads_off_the_site(client, ops, enrolled):
    password_sign_in(client, ops.email, PASSWORD)
    response = client.post(f"{VERIFY_URL}?next=https://evil.example/admin/",
                           {"code": authenticator_code(enrolled["device"])})
    assert response["Location"] == "/admin/"


# --- recovery codes ------------------------------------------------------------------------

def test_a_recovery_code_works_once_and_never_twice(client, ops, enrolled):
    code = enrolled["recovery_codes"][3]
    password_sign_in(client, ops.email, PASSWORD)

    # Typed as people do: capitals, spaces; the dash is optional.
    response = client.post(VERIFY_URL, {"code": f"  {code.upper().replace('-', ' ')} "})

    assert response.status_code == 302
    assert _reaches_the_admin(client)
    assert recovery_codes_left(user=ops) == 9
    assert not StaticToken.objects.filter(token=recovery_code_normalize(code)).exists()

    client.logout()
    password_sign_in(client, ops.email, PASSWORD)
    again = client.post(VERIFY_URL, {"code": code})
    assert again.status_code == 200
    assert "That code is not right, or was already used." in again.text
    assert not _reaches_the_admin(client)


def test_another_staff_members_recovery_code_does_not_sign_in(client, ops, enrolled,
                                                               make_user):
    other = make_user(email="other@example.com", password=PASSWORD, is_staff=True)
    device = authenticator_enrolment_start(user=other)
    authenticator_enrolment_confirm(user=other, code=authenticator_code(device))

    password_sign_in(client, other.email, PASSWORD)
    assert client.post(VERIFY_URL, {"code": enrolled["recovery_codes"][0]}).status_code == 200
    assert not _reaches_the_admin(client)
    assert recovery_codes_left(user=ops) == 10


# --- enrolment on the first sign-in --------------------------------------------------------

def test_a_staff_member_without_an_app_sets_one_up_at_the_first_sign_in(client, ops):
    password_sign_in(client, ops.email, PASSWORD)

    page = client.get("/admin/billing/wallet/", follow=True)

    assert page.redirect_chain == [
        (f"{VERIFY_URL}?next=/admin/billing/wallet/", 302),
        (f"{ENROL_URL}?next=/admin/billing/wallet/", 302)]
    device = TOTPDevice.objects.get(user=ops)
    assert not device.confirmed
    # The secret, as a QR code drawn in the page and as text to type in.
    html = page.text
    assert "<svg" in html
    assert "<path" in html
    assert _secret_shown(html).replace(" ", "") == device.config_url.split("secret=")[1][:32]
    assert "otpauth://" not in html
    assert "<img" not in html
    # A reloaded page shows the same secret, which the app may already hold.
    assert _secret_shown(client.get(ENROL_URL).text) == _secret_shown(html)
    assert not _reaches_the_admin(client)

    wrong = f"{(int(authenticator_code(device)) + 1) % 1_000_000:06d}"
    assert "That code is not right" in client.post(ENROL_URL, {"code": wrong}).text
    assert not _reaches_the_admin(client)
    TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_timestamp=None,
                                                   throttling_failure_count=0)

    done = client.post(f"{ENROL_URL}?next=/admin/billing/wallet/",
                       {"code": authenticator_code(device)})

    assert done.status_code == 200
    codes = _recovery_codes_shown(done.text)
    assert len(codes) == 10 == len(set(codes))
    assert sorted(recovery_code_normalize(code) for code in codes) == sorted(
        StaticToken.objects.filter(device__user=ops).values_list("token", flat=True))
    assert 'href="/admin/billing/wallet/"' in done.text
    assert TOTPDevice.objects.get(pk=device.pk).confirmed
    assert _reaches_the_admin(client)
    # Shown once: the enrolment page is behind them, and the admin shows no code.
    assert client.get(ENROL_URL)["Location"] == "/admin/"
    static = StaticDevice.objects.get(user=ops)
    device_page = client.get(f"/admin/otp_static/staticdevice/{static.pk}/change/").text
    assert not any(code in device_page for code in codes)
    assert not any(recovery_code_normalize(code) in device_page for code in codes)


def test_the_two_factor_pages_hold_no_inline_code_for_the_content_security_policy(client,
                                                                                ops):
    password_sign_in(client, ops.email, PASSWORD)
    enrol_page = client.get(ENROL_URL)
    device = TOTPDevice.objects.get(user=ops)
    codes_page = client.post(ENROL_URL, {"code": authenticator_code(device)})
    client.logout()
    password_sign_in(client, ops.email, PASSWORD)
    verify_page = client.get(VERIFY_URL)

    for page in (enrol_page, codes_page, verify_page):
        assert page.status_code == 200
        assert inline_code(page.text) == []
        assert "/static/accounts/two_factor.css" in page.text
        assert policy_directives(page["Content-Security-Policy"]) == EXPECTED_POLICY


def test_a_password_alone_never_sets_up_a_second_app(client, ops, enrolled):
    password_sign_in(client, ops.email, PASSWORD)

    response = client.get(ENROL_URL)

    assert response["Location"].startswith(VERIFY_URL)
    assert client.post(ENROL_URL, {"code": "123456"})["Location"].startswith(VERIFY_URL)
    assert TOTPDevice.objects.filter(user=ops).count() == 1
    with pytest.raises(AlreadyEnrolled):
        authenticator_enrolment_start(user=ops)


def test_a_staff_member_can_sign_out_before_giving_the_code(client, ops, enrolled):
    password_sign_in(client, ops.email, PASSWORD)
    response = client.post("/admin/two-factor/sign-out/")
    assert response["Location"] == "/admin/login/"
    assert "_auth_user_id" not in client.session


def test_the_code_pages_are_for_staff_only(client, make_user):
    member = make_user(email="member@example.com", password=PASSWORD)
    client.force_login(member)
    for url in [VERIFY_URL, ENROL_URL]:
        assert client.get(url)["Location"].startswith("/admin/login/")
    assert not TOTPDevice.objects.exists()


# --- the admin's view of the devices -------------------------------------------------------

def test_the_admin_lists_devices_without_their_secrets_and_adds_none(admin_client, ops,
                                                                      enrolled):
    device = enrolled["device"]
    page = admin_client.get(f"/admin/otp_totp/totpdevice/{device.pk}/change/")
    assert page.status_code == 200
    assert device.key not in page.text
    assert admin_client.get("/admin/otp_totp/totpdevice/add/").status_code == 403
    listing = admin_client.get("/admin/otp_static/staticdevice/")
    assert "ops@example.com" in listing.text


# --- the demo, and the setting -------------------------------------------------------------

def test_with_the_setting_off_a_password_reaches_the_admin(client, ops, settings):
    settings.ROUTER_STAFF_2FA = False
    password_sign_in(client, ops.email, PASSWORD)

    for url in _admin_pages():
        assert not client.get(url).get("Location", "").startswith(VERIFY_URL), url
    assert _reaches_the_admin(client)
    assert client.get("/admin/billing/wallet/").status_code == 200
    assert client.get(VERIFY_URL)["Location"] == "/admin/"
    assert not TOTPDevice.objects.exists()


def test_staff_signed_in_by_the_test_helper_reach_the_admin(client, ops):
    staff_sign_in(client, ops)
    assert _reaches_the_admin(client)


@pytest.mark.parametrize(("env", "enforced"), [
    ({}, False),  # the embedded default: DEBUG on, make run's demo
    ({"DEBUG": "0"}, True),
    ({"DEBUG": "1", "ROUTER_STAFF_2FA": "1"}, True),
    ({"DEBUG": "0", "ROUTER_STAFF_2FA": "0"}, False),
])
def test_the_second_factor_is_on_whenever_debug_is_off(env, enforced):
    clean = {k: v for k, v in os.environ.items()
             if k not in {"DATABASE_URL", "DEBUG", "ROUTER_STAFF_2FA"}}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import "
         "settings; print(settings.ROUTER_STAFF_2FA)"],
        env={**clean, "DJANGO_SETTINGS_MODULE": "router_admin.settings", **env},
        capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == str(enforced)


def test_the_start_up_checks_refuse_settings_without_django_otps_middleware(settings):
    from router_admin.admin_site import otp_middleware_check

    assert otp_middleware_check() == []
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "django_otp" not in m]
    assert [error.id for error in otp_middleware_check()] == ["router_admin.E001"]
