from django.contrib import admin
from django.urls import include, path

from proxy.entry.health import healthz, readyz
from proxy.entry.metrics_endpoint import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("v1/", include("proxy.entry.urls")),
    path("healthz", healthz),
    path("readyz", readyz),
    path("metrics", metrics_view),
    path("billing/", include("billing.urls")),
    path("api/", include("portal.api.urls")),
    path("", include("portal.urls")),
]
