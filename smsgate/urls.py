from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path

from accounts import views as account_views
from crm import views as crm_views
from deliveries import views as delivery_views
from deliveries import webhooks as delivery_webhooks
from smsgate import health
from deliveries import help as help_views

urlpatterns = [
    # Exactly this path, with or without a trailing slash, never a redirect.
    re_path(r"^amocrm/sms/?$", delivery_views.amocrm_sms, name="amocrm-sms"),
    # The digital pipeline's "send SMS" action (manifest dp.webhook_url); the account's key is in the body.
    re_path(r"^amocrm/pipeline/?$", crm_views.pipeline_webhook, name="amocrm-pipeline"),
    re_path(r"^amocrm/salesbot/?$", crm_views.salesbot_webhook, name="amocrm-salesbot"),
    # Delivery reports; the route token is per route and unguessable. The slash is optional so a
    # provider that drops it gets no redirect (a POST cannot follow one).
    re_path(r"^webhooks/(?P<provider>[a-z0-9_]{1,30})/(?P<token>[A-Za-z0-9_-]{8,64})/?$",
            delivery_webhooks.provider_webhook, name="provider-webhook"),
    path("admin/", admin.site.urls),
    # Install lifecycle and the account API (issue 5).
    re_path(r"^amocrm/oauth/?$", account_views.amocrm_oauth, name="amocrm-oauth"),
    re_path(r"^amocrm/uninstall/?$", account_views.amocrm_uninstall, name="amocrm-uninstall"),
    path("api/", include("smsgate.api_urls")),
    # The help page the widget's support link points at (public; the language from the path or the request).
    path("help/", help_views.help_page, name="help"),
    re_path(r"^help/(?P<language>ru|en)/$", help_views.help_page, name="help-language"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
]

if settings.DEBUG:
    # Development only: a stand-in for amoCRM's card with the real widget in it (accounts/widget_dev.py).
    urlpatterns.append(path("dev/amocrm/", include("accounts.widget_dev")))

# JSON on the machine endpoints for what Django refuses itself (smsgate/errors.py).
handler400 = "smsgate.errors.bad_request"
handler404 = "smsgate.errors.not_found"
