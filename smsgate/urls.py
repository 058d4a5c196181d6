from django.contrib import admin
from django.urls import path, re_path

from deliveries import views as delivery_views
from deliveries import webhooks as delivery_webhooks

urlpatterns = [
    # Exactly this path, with or without a trailing slash, never a redirect.
    re_path(r"^amocrm/sms/?$", delivery_views.amocrm_sms, name="amocrm-sms"),
    # Delivery reports; the route token is per route and unguessable. The slash is optional so a
    # provider that drops it gets no redirect (a POST cannot follow one).
    re_path(r"^webhooks/(?P<provider>[a-z0-9_]{1,30})/(?P<token>[A-Za-z0-9_-]{8,64})/?$",
            delivery_webhooks.provider_webhook, name="provider-webhook"),
    path("admin/", admin.site.urls),
]
