"""Every page of the site (the portal, its sign-in pages, the admin, the API docs) sends one
strict Content-Security-Policy, and no page holds inline code that the policy would refuse.
The browser sees the same pages in tests/portal/browser/test_content_security_policy.py."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib import admin
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from accounts.services import api_key_create, management_token_create, user_create
from billing.models import UsageRecord
from billing.services import price_set, wallet_credit
from billing.services.vouchers import voucher_batch_create
from proxy.services import worker_create
from router_admin.middleware import ContentSecurityPolicyMiddleware, csp_header_value
from tests.live_router import LiveRouter
from tests.router_admin.csp import EXPECTED_POLICY, inline_code, policy_directives
from tests.staff import authenticator_code, password_sign_in, staff_sign_in

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple 42"
ROOT = Path(django_settings.BASE_DIR)


@pytest.fixture
def member() -> User:
    """A portal user with money, a key, a management token and a request on record."""
    user = user_create(email="member@example.com", password=PASSWORD)
    wallet_credit(user=user, amount_micros=10_000_000, idempotency_key="csp-fund",
                  memo="welcome credit", kind="topup")
    api_key = api_key_create(user=user, name="ci").api_key
    management_token_create(user=user, name="scripts")
    price = price_set(model="test-model", input_usd_per_mtok="1", output_usd_per_mtok="2",
                      max_output_tokens=1000)
    UsageRecord.objects.create(request_id="csp-req-1", user=user, api_key=api_key,
                               model="test-model", price=price, prompt_tokens=100,
                               completion_tokens=50, cost_micros=200, latency_ms=120)
    return user


@pytest.fixture
def member_client(client: Client, member: User) -> Client:
    client.force_login(member)
    return client


@pytest.fixture
def staff() -> User:
    return user_create(email="ops@example.com", password=PASSWORD, is_staff=True,
                       is_superuser=True)


@pytest.fixture
def staff_client(member: User, staff: User) -> Client:
    """Staff past both factors, with a row in every table the admin lists."""
    worker_create(name="mock", kind="mock", models=[("test-model", "")])
    voucher_batch_create(amount_micros=1_000_000, count=1, memo="csp")
    return staff_sign_in(Client(), staff)


def assert_strict_policy(response: HttpResponse) -> None:
    assert policy_directives(response["Content-Security-Policy"]) == EXPECTED_POLICY


def assert_no_inline_code(response: HttpResponse) -> None:
    assert inline_code(response.text) == [], response.request["PATH_INFO"]


def test_the_configured_policy_is_the_strict_one_and_allows_nothing_unsafe():
    sources = [source for directive in django_settings.ROUTER_CSP.values()
               for source in directive]

    assert policy_directives(csp_header_value(django_settings.ROUTER_CSP)) == EXPECTED_POLICY
    assert [source for source in sources if source.startswith("'unsafe-")] == []
    assert "*" not in sources


SIGNED_OUT_PAGES = ["portal:login", "portal:signup", "portal:password_reset",
                    "portal:password_reset_done", "portal:password_reset_complete",
                    "admin:login"]


@pytest.mark.parametrize("name", SIGNED_OUT_PAGES)
def test_the_sign_in_pages_send_the_policy_and_hold_no_inline_code(client, name):
    response = client.get(reverse(name))

    assert response.status_code == 200
    assert_strict_policy(response)
    assert_no_inline_code(response)


def test_a_password_reset_link_page_sends_the_policy(client, member):
    response = client.get(reverse("portal:password_reset_confirm", args=["MQ", "bad-token"]))

    assert response.status_code == 200
    assert_strict_policy(response)
    assert_no_inline_code(response)


PORTAL_PAGES = ["portal:dashboard", "portal:keys", "portal:topups", "portal:usage",
                "portal:settings", "portal:password_change", "portal:password_change_done",
                "portal:tokens"]


@pytest.mark.parametrize("name", PORTAL_PAGES)
def test_the_portal_pages_send_the_policy_and_hold_no_inline_code(member_client, name):
    response = member_client.get(reverse(name))

    assert response.status_code == 200
    assert_strict_policy(response)
    assert_no_inline_code(response)


@pytest.mark.parametrize("name", ["portal:key_edit", "portal:key_revoke"])
def test_a_keys_own_pages_send_the_policy_and_hold_no_inline_code(member_client, member,
                                                                   name):
    response = member_client.get(reverse(name, args=[member.api_keys.get().pk]))

    assert response.status_code == 200
    assert_strict_policy(response)
    assert_no_inline_code(response)


def test_the_page_showing_a_new_keys_secret_holds_no_inline_code(member_client):
    response = member_client.post(reverse("portal:keys"), {"name": "new"})

    assert response.status_code == 200
    assert "sk-br-" in response.text
    assert_strict_policy(response)
    assert_no_inline_code(response)


def test_the_api_docs_page_sends_the_policy_and_loads_swagger_ui_from_static_files(client):
    response = client.get(reverse("api:docs"))

    assert response.status_code == 200
    assert_strict_policy(response)
    assert_no_inline_code(response)
    html = response.text
    assert 'src="/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"' in html
    assert 'src="/static/portal/api-docs.js"' in html
    assert 'data-schema-url="/api/schema/"' in html


def _admin_pages() -> list[str]:
    """Every registered model's list, add form and first object's change form, so that an
    admin added later is held to the policy too."""
    urls = [reverse("admin:index")]
    for model in admin.site._registry:
        meta = model._meta
        urls.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
        urls.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_add"))
        first = model._default_manager.order_by("pk").first()
        if first is not None:
            urls.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_change",
                                args=[first.pk]))
    return urls


def test_every_admin_page_sends_the_policy_and_holds_no_inline_code(staff_client):
    pages = _admin_pages()
    assert len(pages) > 30  # every model's list, add and change pages
    for url in pages:
        response = staff_client.get(url)
        if response.status_code == 403:  # adding is refused on append-only tables
            continue
        assert response.status_code == 200, url
        assert_strict_policy(response)
        assert_no_inline_code(response)


def test_the_admins_own_pages_hold_no_inline_code(staff_client, member):
    secret_page = staff_client.post(reverse("admin:accounts_apikey_add"),
                                    {"user": member.pk, "name": "from staff"})
    generate_form = staff_client.get(reverse("admin:billing_voucher_generate"))
    codes_page = staff_client.post(reverse("admin:billing_voucher_generate"), {
        "amount": "2.50", "count": "2", "memo": "csp", "expires_at": ""})
    credit_form = staff_client.post(reverse("admin:billing_wallet_changelist"), {
        "action": "credit_wallets", "_selected_action": [member.wallet.pk], "index": 0})

    for response in (secret_page, generate_form, codes_page, credit_form):
        assert response.status_code == 200
        assert_strict_policy(response)
        assert_no_inline_code(response)
    assert 'class="router-secret"' in secret_page.text
    assert 'class="router-codes"' in codes_page.text
    assert "/static/router_admin/admin.css" in secret_page.text
    assert "/static/router_admin/admin.css" in codes_page.text


def test_the_staff_second_factor_pages_send_the_policy_and_hold_no_inline_code(
        client, staff, settings):
    settings.ROUTER_STAFF_2FA = True
    password_sign_in(client, staff.email, PASSWORD)
    enrol = client.get(reverse("admin:two_factor_enrol"))
    device = TOTPDevice.objects.get(user=staff)
    recovery_codes = client.post(reverse("admin:two_factor_enrol"),
                                 {"code": authenticator_code(device)})
    client.logout()
    password_sign_in(client, staff.email, PASSWORD)
    verify = client.get(reverse("admin:two_factor"))

    for response in (enrol, recovery_codes, verify):
        assert response.status_code == 200
        assert_strict_policy(response)
        assert_no_inline_code(response)
    assert "<svg" in enrol.text  # the QR code, drawn in the page with no style in it
    assert "recovery codes" in recovery_codes.text


def test_the_workers_admin_styles_its_badges_from_a_stylesheet(staff_client):
    response = staff_client.get(reverse("admin:proxy_worker_changelist"))

    assert '<span class="router-badge healthy">healthy</span>' in response.text
    assert "/static/router_admin/admin.css" in response.text


def test_no_template_of_ours_holds_inline_code():
    templates = [*ROOT.joinpath("templates").rglob("*.html"),
                 *(path for app in ("accounts", "billing", "proxy", "portal", "router_admin")
                   for path in ROOT.joinpath(app).glob("templates/**/*.html"))]
    assert templates
    found = {str(path.relative_to(ROOT)): inline_code(path.read_text())
             for path in templates}
    assert {path: code for path, code in found.items() if code} == {}


def _view(request) -> HttpResponse:
    return HttpResponse("<p>hi</p>")


def test_a_response_with_a_policy_of_its_own_keeps_it(rf):
    def view(request) -> HttpResponse:
        response = HttpResponse()
        response["Content-Security-Policy"] = "default-src 'none'"
        return response

    response = ContentSecurityPolicyMiddleware(view)(rf.get("/"))

    assert response["Content-Security-Policy"] == "default-src 'none'"


def test_django_debug_error_pages_go_without_the_policy_but_debug_pages_keep_it(rf, settings):
    settings.DEBUG = True

    def missing(request) -> HttpResponse:
        return HttpResponse("technical 404, styled inline", status=404)

    assert "Content-Security-Policy" not in ContentSecurityPolicyMiddleware(missing)(
        rf.get("/"))
    assert_strict_policy(ContentSecurityPolicyMiddleware(_view)(rf.get("/")))


def test_error_pages_keep_the_policy_in_production(client):
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert_strict_policy(response)


def test_the_v1_api_answers_without_a_policy_where_the_site_sends_it(router: LiveRouter):
    # Only the served router splits /v1 off to its own handler (router_admin.asgi).
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{router.base_url}/models", timeout=10)
    with urllib.request.urlopen(f"{router.url}/login/", timeout=10) as login_page:
        site_policy = login_page.headers["Content-Security-Policy"]

    assert refused.value.code == 401
    assert refused.value.headers["Content-Type"] == "application/json"
    assert refused.value.headers["Content-Security-Policy"] is None
    assert policy_directives(site_policy) == EXPECTED_POLICY
