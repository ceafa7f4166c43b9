"""The portal's pages. Sign-in, sign-out, password reset and change are Django's own views
with the portal's templates."""

from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from portal.forms import SignInForm
from portal.views import (
    account,
    auth,
    auto_topup,
    billing_details,
    dashboard,
    keys,
    models,
    receipts,
    statements,
    tokens,
    topups,
    usage,
    usage_detail,
)
from portal.views.organizations.urls import organization_urlpatterns
from portal.views.playground import playground, playground_key

app_name = "portal"

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("signup/", auth.signup, name="signup"),
    path("login/", auth_views.LoginView.as_view(
        template_name="portal/login.html", authentication_form=SignInForm,
        redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password-reset/", auth.PasswordResetView.as_view(
        template_name="portal/password_reset_form.html",
        email_template_name="portal/email/password_reset.txt",
        subject_template_name="portal/email/password_reset_subject.txt",
        success_url=reverse_lazy("portal:password_reset_done")), name="password_reset"),
    path("password-reset/sent/", auth_views.PasswordResetDoneView.as_view(
        template_name="portal/password_reset_done.html"), name="password_reset_done"),
    path("password-reset/<uidb64>/<token>/", auth_views.PasswordResetConfirmView.as_view(
        template_name="portal/password_reset_confirm.html",
        success_url=reverse_lazy("portal:password_reset_complete")),
        name="password_reset_confirm"),
    path("password-reset/done/", auth_views.PasswordResetCompleteView.as_view(
        template_name="portal/password_reset_complete.html"), name="password_reset_complete"),
    path("settings/password/", auth_views.PasswordChangeView.as_view(
        template_name="portal/password_change.html",
        success_url=reverse_lazy("portal:password_change_done")), name="password_change"),
    path("settings/password/done/", auth_views.PasswordChangeDoneView.as_view(
        template_name="portal/password_change_done.html"), name="password_change_done"),
    path("keys/", keys.keys_list, name="keys"),
    path("keys/<int:key_id>/", keys.key_edit, name="key_edit"),
    path("keys/<int:key_id>/revoke/", keys.key_revoke, name="key_revoke"),
    path("topups/", topups.topups, name="topups"),
    path("topups/voucher/", topups.voucher_redeem_view, name="voucher_redeem"),
    path("topups/checkout/", topups.checkout_create, name="checkout_create"),
    path("topups/auto/", auto_topup.auto_topup_page, name="auto_topup"),
    path("topups/auto/card/", auto_topup.auto_topup_card, name="auto_topup_card"),
    path("topups/auto/card/done/", auto_topup.auto_topup_card_done,
         name="auto_topup_card_done"),
    path("topups/auto/pay-and-save/", auto_topup.auto_topup_pay_and_save,
         name="auto_topup_pay_and_save"),
    path("topups/receipts/<int:entry_id>/", receipts.receipt_page, name="receipt"),
    path("topups/receipts/<int:entry_id>/receipt.pdf", receipts.receipt_pdf,
         name="receipt_pdf"),
    path("usage/", usage.usage, name="usage"),
    path("usage.csv", usage.usage_csv, name="usage_csv"),
    path("usage/<str:request_id>/", usage_detail.usage_detail, name="usage_detail"),
    path("models/", models.models_page, name="models"),
    path("statement/", statements.statement_page, name="statement"),
    path("statement.csv", statements.statement_csv, name="statement_csv"),
    path("settings/", account.account_settings, name="settings"),
    path("settings/billing/", billing_details.billing_details, name="billing_details"),
    path("tokens/", tokens.tokens_page, name="tokens"),
    path("tokens/<int:token_id>/revoke/", tokens.token_revoke, name="token_revoke"),
    path("playground/", playground, name="playground"),
    path("playground/key", playground_key, name="playground_key"),
    *organization_urlpatterns,
]
