from django.contrib import admin
from django.urls import include, path, re_path

from accounts import views as account_views
from deliveries import views as delivery_views
from smsgate import health

urlpatterns = [
    # Exactly this path, with or without a trailing slash, never a redirect.
    re_path(r"^amocrm/sms/?$", delivery_views.amocrm_sms, name="amocrm-sms"),
    path("admin/", admin.site.urls),
    # Install lifecycle and the account API (issue 5).
    re_path(r"^amocrm/oauth/?$", account_views.amocrm_oauth, name="amocrm-oauth"),
    re_path(r"^amocrm/uninstall/?$", account_views.amocrm_uninstall, name="amocrm-uninstall"),
    path("api/", include("smsgate.api_urls")),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
]
