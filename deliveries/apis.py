"""The account API for deliveries: the list (cursor-paginated, filtered), one delivery with its
attempts and status reports, and the owner's figures (deliveries.figures, from the counters). Every read starts from the caller's account.

Phones are shown in full: they are the account's own customers, already in its CRM, and the owner
filters by them. Texts are shown with code digits masked, as in the admin: a login code is a
credential of the recipient, not of the account owner.
"""

import uuid

from django.http import Http404
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from routes.models import ProviderRoute
from routes.providers import PROVIDERS
from routes.providers.base import Provider
from smsgate import drf, inputs
from smsgate.drf import ERRORS, ErrorSerializer

from .masking import mask_codes
from .models import Attempt, Delivery, DeliveryStatus, StatusEvent
from smsgate.phones import phone_normalise_for_search
from .alerts import account_alerts, alert_settings_of, alert_settings_save, balance_watches
from .figures import owner_figures
from .selectors import DeliveryFilter, deliveries_of_account, delivery_of_account
from .services.intake import delivery_create_test

STATS_MAX_DAYS = 90
_DOMAIN_REGION = {"amocrm.ru": "RU"}


class DeliveryCursorPagination(CursorPagination):
    ordering = "-created_at"  # the (account, -created_at) index serves every page
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def get_page_size(self, request):
        # DRF reads the number with int(), which takes any script's digits; those mean the default.
        if not inputs.ascii_digits(request.query_params.get(self.page_size_query_param, "0")):
            return self.page_size
        return super().get_page_size(request)

    def decode_cursor(self, request):
        # The cursor's position goes into the query as a creation time: a forged one that is not a
        # time would be a database error, so it is refused like any other invalid cursor.
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            try:
                if parse_datetime(cursor.position) is None:
                    raise ValueError(cursor.position)
            except ValueError:
                raise NotFound(self.invalid_cursor_message) from None
        return cursor


class DeliverySerializer(serializers.ModelSerializer):
    text = serializers.SerializerMethodField()
    route = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)

    class Meta:
        model = Delivery
        fields = ["id", "kind", "status", "phone", "text", "segments", "encoding", "route", "provider",
                  "error_class", "error_code", "error_text", "attempt_count", "created_at", "sent_at",
                  "finished_at"]
        read_only_fields = fields

    @extend_schema_field(serializers.CharField())
    def get_text(self, delivery) -> str:
        return mask_codes(delivery.text)


class AttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = Attempt
        fields = ["id", "route", "provider", "started_at", "finished_at", "outcome", "error_class", "provider_code",
                  "error_text", "provider_message_id", "latency_ms"]
        read_only_fields = fields


class StatusEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = StatusEvent
        fields = ["id", "source", "status", "provider_code", "error_class", "occurred_at", "received_at", "applied"]
        read_only_fields = fields


class DeliveryDetailSerializer(DeliverySerializer):
    attempts = AttemptSerializer(many=True, read_only=True)
    events = StatusEventSerializer(many=True, read_only=True)

    class Meta(DeliverySerializer.Meta):
        fields = DeliverySerializer.Meta.fields + ["provider_message_id", "valid_until", "attempts", "events"]
        read_only_fields = fields


class DeliveryFilterSerializer(serializers.Serializer):
    status = serializers.MultipleChoiceField(choices=DeliveryStatus.choices, required=False,
                                             help_text="repeat for several, or separate by commas")
    created_from = drf.DateField(required=False, help_text="from this day on (inclusive)")
    created_to = drf.DateField(required=False, help_text="up to this day (inclusive)")
    phone = serializers.CharField(required=False, max_length=40,
                                  help_text="any common format; normalised to E.164, exact match")

    def to_internal_value(self, data):
        if hasattr(data, "getlist"):  # ?status=a&status=b or ?status=a,b
            statuses = [s for value in data.getlist("status") for s in value.split(",") if s]
            data = {k: data.get(k) for k in data if k != "status"} | ({"status": statuses} if statuses else {})
        return super().to_internal_value(data)

    def validate(self, attrs):
        if attrs.get("created_from") and attrs.get("created_to") and attrs["created_from"] > attrs["created_to"]:
            raise serializers.ValidationError({"created_to": [_("The end of the range is before its start.")]})
        return attrs

    def to_filter(self, *, region) -> DeliveryFilter:
        data = self.validated_data
        phone = None
        if data.get("phone"):
            phone = phone_normalise_for_search(data["phone"], default_region=region)
            if phone is None:
                raise serializers.ValidationError({"phone": [_("Enter a phone number, e.g. +79123456789.")]})
        return DeliveryFilter(statuses=tuple(sorted(data.get("status", ()))), created_from=data.get("created_from"),
                              created_to=data.get("created_to"), phone=phone)


@extend_schema(tags=["deliveries"])
class DeliveryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    pagination_class = DeliveryCursorPagination
    lookup_value_regex = "[^/]+"  # any id reaches the view, so a malformed one gets the API's JSON 404

    def get_serializer_class(self):
        return DeliveryDetailSerializer if self.action == "retrieve" else DeliverySerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no caller
            return Delivery.objects.none()
        account = self.request.user.account
        params = DeliveryFilterSerializer(data=self.request.query_params)
        params.is_valid(raise_exception=True)
        return deliveries_of_account(account=account,
                                     filters=params.to_filter(region=_DOMAIN_REGION.get(account.domain)))

    @extend_schema(parameters=[DeliveryFilterSerializer], responses={200: DeliverySerializer(many=True), **ERRORS})
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(responses={200: DeliveryDetailSerializer, **ERRORS})
    def retrieve(self, request, *args, **kwargs):
        try:
            if not kwargs["pk"].isascii():  # uuid.UUID() reads hex digits with int(): any script's digits
                raise ValueError(kwargs["pk"])
            delivery_id = uuid.UUID(kwargs["pk"])
        except ValueError:
            raise Http404 from None
        delivery = delivery_of_account(account=request.user.account, delivery_id=delivery_id)
        if delivery is None:
            raise Http404
        return Response(DeliveryDetailSerializer(delivery).data)


class StatsDaySerializer(serializers.Serializer):
    date = serializers.DateField()
    total = serializers.IntegerField()
    by_status = serializers.DictField(child=serializers.IntegerField(),
                                      help_text="every status (pending includes sending)")
    by_source = serializers.DictField(child=serializers.IntegerField(),
                                      help_text="by delivery kind: system (login codes), crm (card), pipeline, ...")
    parts = serializers.IntegerField(help_text="SMS parts the providers took (what they bill)")


class StatsSourceSerializer(serializers.Serializer):
    source = serializers.CharField(help_text='the delivery kind; "" for SMS counted before kinds were kept')
    label = serializers.CharField()
    total = serializers.IntegerField()
    parts = serializers.IntegerField()


class StatsRouteSerializer(serializers.Serializer):
    route_id = serializers.IntegerField(allow_null=True, help_text="null: the service's default route")
    provider = serializers.CharField()
    name = serializers.CharField()
    total = serializers.IntegerField()
    delivered = serializers.IntegerField()
    finished = serializers.IntegerField(help_text="final outcomes the delivery rate is computed over")
    delivery_rate = serializers.FloatField(allow_null=True)
    median_seconds = serializers.FloatField(allow_null=True, help_text="median time to delivered")
    parts = serializers.IntegerField()


class StatsReasonSerializer(serializers.Serializer):
    status = serializers.CharField()
    error_class = serializers.CharField()
    count = serializers.IntegerField()
    text = serializers.CharField(help_text="in plain words, in the request's language")


class StatsSerializer(serializers.Serializer):
    days = serializers.IntegerField()
    since = serializers.DateField()
    until = serializers.DateField()
    series = StatsDaySerializer(many=True)
    sources = StatsSourceSerializer(many=True)
    routes = StatsRouteSerializer(many=True)
    parts = serializers.IntegerField()
    failure_reasons = StatsReasonSerializer(many=True)


class StatsParamsSerializer(serializers.Serializer):
    days = drf.IntegerField(min_value=1, max_value=STATS_MAX_DAYS, default=30, required=False)


class StatsView(APIView):
    """The owner's figures, from the daily counters only (never a count over deliveries)."""

    @extend_schema(operation_id="stats", tags=["deliveries"], parameters=[StatsParamsSerializer],
                   responses={200: StatsSerializer, **ERRORS})
    def get(self, request):
        params = StatsParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        days = params.validated_data.get("days", 30)
        return Response(StatsSerializer(owner_figures(account=request.user.account, days=days)).data)


# --- the owner's alerts ---------------------------------------------------------------------------------------
class AlertSerializer(serializers.Serializer):
    code = serializers.ChoiceField(choices=["balance_low", "route_broken", "route_sends_nothing",
                                            "delivery_rate_drop"])
    key = serializers.CharField()
    title = serializers.CharField()
    detail = serializers.CharField()
    route_id = serializers.IntegerField(allow_null=True)


class BalanceWatchSerializer(serializers.Serializer):
    route_id = serializers.IntegerField()
    name = serializers.CharField()
    supports_balance = serializers.BooleanField()
    below = serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True)
    amount = serializers.DecimalField(max_digits=18, decimal_places=4, allow_null=True)
    currency = serializers.CharField(allow_blank=True)
    checked_at = serializers.DateTimeField(allow_null=True)
    error = serializers.CharField(allow_blank=True, help_text="why the balance could not be read")


class AlertsSerializer(serializers.Serializer):
    alerts = AlertSerializer(many=True)
    amo_tasks = serializers.BooleanField()
    balances = BalanceWatchSerializer(many=True)


class ThresholdSerializer(serializers.Serializer):
    route_id = drf.IntegerField(min_value=1, max_value=inputs.BIGINT_MAX)
    below = drf.DecimalField(max_digits=14, decimal_places=2, min_value=0, allow_null=True,
                             help_text="alert when the balance is under this; null: no alert")


class AlertSettingsSerializer(serializers.Serializer):
    amo_tasks = serializers.BooleanField(required=False,
                                         help_text="also create an amoCRM task for the administrator, once a day")
    thresholds = ThresholdSerializer(many=True, required=False, max_length=100)

    def validate_thresholds(self, value):
        ids = [item["route_id"] for item in value]
        if len(set(ids)) != len(ids):
            raise serializers.ValidationError(_("Each route may appear once."))
        return value


def _alerts_reply(account) -> dict:
    balances = []
    for route, watch in balance_watches(account=account):
        provider = PROVIDERS.get(route.provider)
        balances.append({"route_id": route.pk, "name": (provider.name if provider else route.provider)
                         + (f" ({route.sender})" if route.sender else ""),
                         "supports_balance": bool(provider) and provider.balance is not Provider.balance,
                         "below": watch.below if watch else None, "amount": watch.amount if watch else None,
                         "currency": watch.currency if watch else "", "checked_at": watch.checked_at if watch else None,
                         "error": watch.error if watch else ""})
    return {"alerts": [alert.as_dict() for alert in account_alerts(account=account)],
            "amo_tasks": alert_settings_of(account=account).amo_tasks, "balances": balances}


class AlertsView(APIView):
    """`GET /api/v1/alerts/`: the account's alerts now and its alert settings; `PUT` (an administrator)
    saves the settings: balance thresholds per route, and whether alerts also become amoCRM tasks."""

    @extend_schema(operation_id="alerts", tags=["alerts"], responses={200: AlertsSerializer, **ERRORS})
    def get(self, request):
        return Response(AlertsSerializer(_alerts_reply(request.user.account)).data)

    @extend_schema(operation_id="alerts_update", tags=["alerts"], request=AlertSettingsSerializer,
                   responses={200: AlertsSerializer, **ERRORS})
    def put(self, request):
        serializer = AlertSettingsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        thresholds = {item["route_id"]: item["below"] for item in data.get("thresholds", [])}
        try:
            alert_settings_save(account=request.user.account, amo_tasks=data.get("amo_tasks"), thresholds=thresholds)
        except ValueError:
            raise serializers.ValidationError({"thresholds": [_("This is not a route of this account.")]}) from None
        return Response(AlertsSerializer(_alerts_reply(request.user.account)).data)


# --- a test SMS through one route ---------------------------------------------------------------------------
class TestSmsSerializer(serializers.Serializer):
    phone = serializers.CharField(max_length=40, help_text="international format, e.g. +79123456789")


class TestSmsResultSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()


class RouteTestSmsView(APIView):
    """`POST /api/v1/routes/{id}/test-sms/`: a test SMS (a delivery) through one of the account's routes."""

    @extend_schema(operation_id="routes_test_sms_create", request=TestSmsSerializer,
                   responses={202: TestSmsResultSerializer, 422: OpenApiResponse(ErrorSerializer),
                              429: OpenApiResponse(ErrorSerializer, description="an abuse limit; see Retry-After"),
                              **ERRORS}, tags=["routes"])
    def post(self, request, pk):
        route_id = inputs.db_id(pk)  # the ORM would read "١" (ARABIC-INDIC ONE) as route 1
        route = ProviderRoute.objects.filter(account=request.user.account, pk=route_id).first() if route_id else None
        if route is None:
            raise Http404
        serializer = TestSmsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = delivery_create_test(account=request.user.account, phone=serializer.validated_data["phone"],
                                      route=route)
        return Response(TestSmsResultSerializer({"id": result.delivery.pk, "status": result.delivery.status}).data,
                        status=status.HTTP_202_ACCEPTED)
