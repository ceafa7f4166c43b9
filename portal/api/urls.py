from django.urls import path, re_path
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from portal.api.base import NotFoundApi
from portal.api.views.auto_topup import AutoTopUpApi, AutoTopUpCardApi
from portal.api.views.balance import BalanceApi
from portal.api.views.keys import KeyDetailApi, KeyListApi
from portal.api.views.organizations.urls import organization_api_urlpatterns
from portal.api.views.receipts import ReceiptDetailApi, ReceiptListApi
from portal.api.views.refused import RefusedListApi
from portal.api.views.tokens import TokenDetailApi, TokenListApi
from portal.api.views.topups import CheckoutApi, TopUpDetailApi, TopUpListApi
from portal.api.views.usage import UsageByModelApi, UsageDailyApi, UsageListApi
from portal.api.views.usage_detail import UsageDetailApi
from portal.api.views.vouchers import VoucherRedeemApi

app_name = "api"

urlpatterns = [
    path("balance", BalanceApi.as_view(), name="balance"),
    path("keys", KeyListApi.as_view(), name="keys"),
    path("keys/<int:key_id>", KeyDetailApi.as_view(), name="key"),
    path("usage", UsageListApi.as_view(), name="usage"),
    path("usage/daily", UsageDailyApi.as_view(), name="usage-daily"),
    path("usage/models", UsageByModelApi.as_view(), name="usage-models"),
    path("usage/refused", RefusedListApi.as_view(), name="usage-refused"),
    path("usage/<str:request_id>", UsageDetailApi.as_view(), name="usage-detail"),
    path("vouchers/redeem", VoucherRedeemApi.as_view(), name="voucher-redeem"),
    path("topups", TopUpListApi.as_view(), name="topups"),
    path("topups/<int:topup_id>", TopUpDetailApi.as_view(), name="topup"),
    path("topups/checkout", CheckoutApi.as_view(), name="topup-checkout"),
    path("auto-topup", AutoTopUpApi.as_view(), name="auto-topup"),
    path("auto-topup/card", AutoTopUpCardApi.as_view(), name="auto-topup-card"),
    path("receipts", ReceiptListApi.as_view(), name="receipts"),
    path("receipts/<int:entry_id>", ReceiptDetailApi.as_view(), name="receipt"),
    path("tokens", TokenListApi.as_view(), name="tokens"),
    path("tokens/<int:token_id>", TokenDetailApi.as_view(), name="token"),
    *organization_api_urlpatterns,
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # Our page around Swagger UI: drf-spectacular's starts it with inline code, which the
    # site's Content-Security-Policy refuses.
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema",
                                                 template_name="portal/api/docs.html"),
         name="docs"),
    re_path(r"^.*$", extend_schema(exclude=True)(NotFoundApi).as_view()),
]
