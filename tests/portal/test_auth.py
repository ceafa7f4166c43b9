from __future__ import annotations

import re

import pytest
from django.contrib.auth import SESSION_KEY
from django.core import mail
from django.urls import reverse

from accounts.models import User
from portal.throttle import MAX_FAILURES
from tests.portal.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def _sign_in(client, email: str, password: str, address: str = "198.51.100.7"):
    return client.post(reverse("portal:login"), {"username": email, "password": password},
                       REMOTE_ADDR=address)


def test_signing_up_creates_the_user_and_signs_them_in(client):
    response = client.post(reverse("portal:signup"), {
        "email": "New.Person@Example.com", "password1": PASSWORD, "password2": PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == reverse("portal:dashboard")
    user = User.objects.get(email="new.person@example.com")
    assert user.check_password(PASSWORD)
    assert not user.is_staff
    assert client.session[SESSION_KEY] == str(user.pk)
    assert client.get(reverse("portal:dashboard")).status_code == 200


@pytest.mark.parametrize(("password", "message"), [
    ("short", "too short"),
    ("password123", "too common"),
    ("83726150194", "entirely numeric"),
    ("signup.person@example", "too similar"),
])
def test_sign_up_applies_djangos_password_validators(client, password, message):
    response = client.post(reverse("portal:signup"), {
        "email": "signup.person@example.com", "password1": password, "password2": password})

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not User.objects.filter(email="signup.person@example.com").exists()


def test_sign_up_refuses_an_email_that_has_an_account(client, member):
    response = client.post(reverse("portal:signup"), {
        "email": "MEMBER@example.com", "password1": PASSWORD, "password2": PASSWORD})

    assert "already exists" in response.content.decode()
    assert User.objects.filter(email__iexact="member@example.com").count() == 1


def test_sign_up_refuses_two_different_passwords(client):
    response = client.post(reverse("portal:signup"), {
        "email": "typo@example.com", "password1": PASSWORD, "password2": PASSWORD + "!"})

    assert "The two passwords differ." in response.content.decode()
    assert not User.objects.filter(email="typo@example.com").exists()


def test_sign_up_cannot_make_a_staff_user(client):
    client.post(reverse("portal:signup"), {
        "email": "sneaky@example.com", "password1": PASSWORD, "password2": PASSWORD,
        "is_staff": "on", "is_superuser": "on"})

    user = User.objects.get(email="sneaky@example.com")
    assert not user.is_staff
    assert not user.is_superuser


def test_signing_in_and_out(client, member):
    response = _sign_in(client, "member@example.com", PASSWORD)
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:dashboard")
    assert client.session[SESSION_KEY] == str(member.pk)

    # Signing out is a POST (a link or an image tag cannot sign anyone out).
    assert client.get(reverse("portal:logout")).status_code == 405
    response = client.post(reverse("portal:logout"))
    assert response.status_code == 302
    assert SESSION_KEY not in client.session
    assert client.get(reverse("portal:dashboard"))["Location"].startswith(reverse("portal:login"))


def test_a_wrong_password_is_refused_with_a_message(client, member):
    response = _sign_in(client, "member@example.com", "not the password")

    assert response.status_code == 200
    assert "Please enter a correct email and password" in response.content.decode()
    assert SESSION_KEY not in client.session


def test_pages_ask_anonymous_visitors_to_sign_in(client):
    for name in ("portal:dashboard", "portal:keys", "portal:topups", "portal:usage",
                 "portal:usage_csv", "portal:settings"):
        response = client.get(reverse(name))
        assert response.status_code == 302, name
        assert response["Location"] == f"{reverse('portal:login')}?next={reverse(name)}"


def test_ten_failures_for_one_email_block_it_from_any_address(client, member):
    for attempt in range(MAX_FAILURES):
        _sign_in(client, "member@example.com", f"guess {attempt}", f"203.0.113.{attempt}")

    # The right password from a new address: still refused, and told why.
    response = _sign_in(client, "Member@Example.com", PASSWORD, "192.0.2.200")

    assert response.status_code == 200
    assert "Too many failed sign-in attempts. Wait 15 minutes" in response.content.decode()
    assert SESSION_KEY not in client.session


def test_ten_failures_from_one_address_block_it_for_every_account(client, member, make_user):
    for attempt in range(MAX_FAILURES):
        _sign_in(client, f"nobody{attempt}@example.com", "guess", "198.51.100.66")

    blocked = _sign_in(client, "member@example.com", PASSWORD, "198.51.100.66")
    assert "Too many failed sign-in attempts" in blocked.content.decode()
    # Another address is not affected.
    assert _sign_in(client, "member@example.com", PASSWORD, "198.51.100.67").status_code == 302


def test_nine_failures_then_the_right_password_signs_in_and_clears_the_count(client, member):
    for attempt in range(MAX_FAILURES - 1):
        _sign_in(client, "member@example.com", f"guess {attempt}", f"203.0.113.{attempt}")

    assert _sign_in(client, "member@example.com", PASSWORD, "192.0.2.1").status_code == 302
    client.post(reverse("portal:logout"))
    # The email's count started again: nine more failures do not block it.
    for attempt in range(MAX_FAILURES - 1):
        _sign_in(client, "member@example.com", f"again {attempt}", f"203.0.113.{50 + attempt}")
    assert _sign_in(client, "member@example.com", PASSWORD, "192.0.2.2").status_code == 302


def test_password_reset_by_email_sets_a_new_password(client, member):
    response = client.post(reverse("portal:password_reset"), {"email": "member@example.com"})
    assert response["Location"] == reverse("portal:password_reset_done")

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["member@example.com"]
    assert message.subject == "Reset your Binom Router password"
    link = re.search(r"http://testserver(/password-reset/\S+/\S+/)", message.body).group(1)

    form_url = client.get(link)["Location"]  # Django swaps the token for a session one
    response = client.post(form_url, {"new_password1": "a brand new passphrase 7",
                                      "new_password2": "a brand new passphrase 7"})
    assert response["Location"] == reverse("portal:password_reset_complete")
    member.refresh_from_db()
    assert member.check_password("a brand new passphrase 7")
    # The link works once.
    assert "This link no longer works" in client.get(link, follow=True).content.decode()


def test_password_reset_for_an_unknown_email_sends_nothing_and_says_the_same(client):
    response = client.post(reverse("portal:password_reset"), {"email": "who@example.com"})

    assert response["Location"] == reverse("portal:password_reset_done")
    assert mail.outbox == []


def test_changing_the_password_from_settings(member_client, member):
    response = member_client.post(reverse("portal:password_change"), {
        "old_password": PASSWORD, "new_password1": "another fine passphrase 9",
        "new_password2": "another fine passphrase 9"})

    assert response["Location"] == reverse("portal:password_change_done")
    member.refresh_from_db()
    assert member.check_password("another fine passphrase 9")


def test_at_most_three_reset_emails_an_hour_go_to_one_mailbox(client, member):
    answers = [client.post(reverse("portal:password_reset"), {"email": "member@example.com"},
                           REMOTE_ADDR=f"203.0.113.{i}") for i in range(5)]

    assert [a.status_code for a in answers] == [302, 302, 302, 200, 200]
    assert "Too many reset emails" in answers[-1].content.decode()
    assert len(mail.outbox) == 3


def test_one_address_asks_for_at_most_ten_reset_emails_an_hour(client, make_user):
    for i in range(12):
        make_user(email=f"person{i}@example.com", password=PASSWORD)
    answers = [client.post(reverse("portal:password_reset"), {"email": f"person{i}@example.com"},
                           REMOTE_ADDR="198.51.100.9") for i in range(12)]

    assert [a.status_code for a in answers].count(302) == 10
    assert len(mail.outbox) == 10
    # Another address is not held back by that one.
    assert client.post(reverse("portal:password_reset"), {"email": "person11@example.com"},
                       REMOTE_ADDR="198.51.100.10").status_code == 302


def test_one_address_makes_at_most_ten_accounts_an_hour(client):
    codes = []
    for i in range(11):
        client.logout()
        codes.append(client.post(reverse("portal:signup"), {
            "email": f"bulk{i}@example.com", "password1": PASSWORD, "password2": PASSWORD,
        }, REMOTE_ADDR="192.0.2.44").status_code)

    assert codes == [302] * 10 + [429]
    assert User.objects.filter(email__startswith="bulk").count() == 10
