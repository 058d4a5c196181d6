from django.contrib import admin
from django.urls import path, re_path

from deliveries import views as delivery_views
from smsgate import health

urlpatterns = [
    # Exactly this path, with or without a trailing slash, never a redirect.
    re_path(r"^amocrm/sms/?$", delivery_views.amocrm_sms, name="amocrm-sms"),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
]
