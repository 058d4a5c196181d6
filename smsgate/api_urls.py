"""/api/v1/ (the account API, for the widget's settings page) and its OpenAPI schema and docs."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from accounts import apis as account_apis
from crm import apis as crm_apis
from crm import list_apis, pipeline_apis
from deliveries import apis as delivery_apis
from routes import apis as route_apis

router = SimpleRouter()
router.register("routes", route_apis.RouteViewSet, basename="route")
router.register("deliveries", delivery_apis.DeliveryViewSet, basename="delivery")
router.register("templates", crm_apis.TemplateViewSet, basename="template")

v1 = [
    path("account/", account_apis.AccountView.as_view(), name="account"),
    path("providers/", route_apis.ProviderCatalogueView.as_view(), name="providers"),
    path("routes/<str:pk>/test-sms/", delivery_apis.RouteTestSmsView.as_view(), name="route-test-sms"),
    path("stats/", delivery_apis.StatsView.as_view(), name="stats"),
    path("alerts/", delivery_apis.AlertsView.as_view(), name="alerts"),
    path("limits/", account_apis.LimitsView.as_view(), name="limits"),
    path("crm/cards/<str:entity_type>/<str:entity_id>/", crm_apis.CardView.as_view(), name="crm-card"),
    path("crm/sends/", crm_apis.CrmSendsView.as_view(), name="crm-sends"),
    path("crm/activity/", list_apis.ActivityView.as_view(), name="crm-activity"),
    path("crm/list-sends/", list_apis.ListSendsView.as_view(), name="crm-list-sends"),
    path("crm/list-sends/preview/", list_apis.ListSendPreviewView.as_view(), name="crm-list-sends-preview"),
    path("crm/list-sends/<int:send_id>/", list_apis.ListSendView.as_view(), name="crm-list-send"),
    path("crm/list-sends/<int:send_id>/cancel/", list_apis.ListSendCancelView.as_view(), name="crm-list-send-cancel"),
    path("pipeline/", pipeline_apis.PipelineView.as_view(), name="pipeline"),
    path("pipeline/key/", pipeline_apis.PipelineKeyView.as_view(), name="pipeline-key"),
    *router.urls,
]

urlpatterns = [
    path("v1/", include((v1, "api"), namespace="v1")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api-schema", template_name="api/redoc.html"),
         name="api-redoc"),
]
