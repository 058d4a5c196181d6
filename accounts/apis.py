"""The account API (what the widget's settings page calls): the account, the provider catalogue,
the account's routes, a test SMS and a balance per route. Thin: validate, call a service, answer.

Every query starts from `request.user.account`, so one account never reaches another's rows.
"""

import logging

from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from phonenumbers import SUPPORTED_REGIONS
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from deliveries.providers import PROVIDERS
from deliveries.providers.base import ProviderError
from deliveries.selectors import provider_catalogue
from deliveries.services import DeliveryRefused, delivery_create_test, route_balance, route_callback_url
from smsgate import drf, inputs

from .models import LIMIT_NUMBER_FIELDS, AccountOwnLimits, ProviderRoute
from .services import account_limits_save, route_delete, route_save, routes_reorder

logger = logging.getLogger(__name__)

MAX_CREDENTIAL_LENGTH = 500


# --- errors: {"detail", "code"[, "errors"]} like the SMS endpoint, in the request's language --------
class ApiError(exceptions.APIException):
    def __init__(self, detail, code: str, status_code: int):
        self.status_code = status_code
        super().__init__(detail=detail, code=code)


def api_exception_handler(exc, context):
    if isinstance(exc, DeliveryRefused):
        data = {"detail": str(exc.message), "code": exc.code}
        if exc.errors:
            data["errors"] = {k: [str(m) for m in v] for k, v in exc.errors.items()}
        if exc.delivery_id:
            data["id"] = str(exc.delivery_id)  # the refusal is recorded as a rejected delivery
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return Response(data, status=exc.http_status, headers=headers)
    if isinstance(exc, RequestDataTooBig):  # Django's own answer would be an HTML page
        return Response({"detail": str(_("The request body is too large.")), "code": "body_too_large"}, status=413)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"detail": str(_("The request has invalid fields.")), "code": "invalid",
                         "errors": _field_messages(exc.detail)}
    elif isinstance(exc, Http404):
        response.data = {"detail": str(_("Not found.")), "code": "not_found"}
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        response.data = {"detail": _text(exc.detail), "code": codes if isinstance(codes, str) else "error"}
    return response


def _text(value) -> str:
    """An error message as it can be sent: messages may quote the input ("x" is not a valid choice),
    and a lone surrogate in it cannot be encoded (an error answer must never become a 500)."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def _messages(value, prefix=""):
    """Nested DRF errors (a dict field's keys, a list's items) as flat "key: message" strings."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _messages(item, f"{prefix}{_text(key)}: " if str(key) else prefix)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _messages(item, prefix)
    else:
        yield f"{prefix}{_text(value)}"


def _field_messages(detail) -> dict[str, list[str]]:
    """{"field": ["message", ...]}, always that shape (the schema promises it)."""
    if isinstance(detail, dict):
        return {_text(field): list(_messages(value)) for field, value in detail.items()}
    return {"non_field_errors": list(_messages(detail))}


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField()
    errors = serializers.DictField(required=False, child=serializers.ListField(child=serializers.CharField()))


ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="invalid fields"),
    401: OpenApiResponse(ErrorSerializer, description="missing, forged or expired X-Auth-Token"),
    403: OpenApiResponse(ErrorSerializer, description="account disabled, or a write without is_admin"),
    404: OpenApiResponse(ErrorSerializer, description="not one of this account's objects"),
}


# --- the account -----------------------------------------------------------------------------------
class AccountSerializer(serializers.Serializer):
    amo_id = serializers.IntegerField()
    subdomain = serializers.CharField()
    domain = serializers.CharField()
    is_active = serializers.BooleanField()
    is_admin = serializers.BooleanField(help_text="whether the calling user may change settings")
    route_count = serializers.IntegerField()


class AccountView(APIView):
    @extend_schema(operation_id="account", responses={200: AccountSerializer, **ERRORS}, tags=["account"])
    def get(self, request):
        account = request.user.account
        return Response(AccountSerializer({
            "amo_id": account.amo_id, "subdomain": account.subdomain, "domain": account.domain,
            "is_active": account.is_active, "is_admin": request.user.is_admin,
            "route_count": ProviderRoute.objects.filter(account=account).count(),
        }).data)


# --- the provider catalogue ----------------------------------------------------------------------------
class CredentialFieldSerializer(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField()
    help = serializers.CharField()
    secret = serializers.BooleanField(help_text="write-only: never returned, only whether it is set")
    required = serializers.BooleanField()


class ProviderSerializer(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    supports_callbacks = serializers.BooleanField()
    supports_balance = serializers.BooleanField()
    credential_fields = CredentialFieldSerializer(many=True)


class ProviderCatalogueView(APIView):
    @extend_schema(operation_id="providers_list", responses={200: ProviderSerializer(many=True), **ERRORS},
                   tags=["providers"])
    def get(self, request):
        language = (get_language() or "en").split("-")[0]
        return Response(ProviderSerializer(provider_catalogue(language=language), many=True).data)


# --- routes -------------------------------------------------------------------------------------------
class RouteHealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "broken", "inactive"])
    reason = serializers.CharField(allow_blank=True)
    since = serializers.DateTimeField(allow_null=True)


class RouteSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    provider = serializers.ChoiceField(choices=sorted(PROVIDERS), help_text="a slug from /api/v1/providers/")
    provider_name = serializers.SerializerMethodField()
    sender = serializers.CharField(max_length=20, allow_blank=True, required=False)
    priority = drf.IntegerField(min_value=0, max_value=32767, required=False,
                                help_text="lower numbers are tried first")
    is_active = serializers.BooleanField(required=False)
    credentials = serializers.DictField(
        child=serializers.CharField(allow_blank=True, max_length=MAX_CREDENTIAL_LENGTH, trim_whitespace=True),
        write_only=True, required=False,
        help_text="write-only; on update an empty or missing value keeps the stored one",
    )
    public_credentials = serializers.SerializerMethodField()
    secrets_set = serializers.SerializerMethodField()
    callback_url = serializers.SerializerMethodField()
    health = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def get_provider_name(self, route) -> str:
        cls = PROVIDERS.get(route.provider)
        return cls.name if cls else route.provider

    @extend_schema_field(serializers.DictField(child=serializers.CharField()))
    def get_public_credentials(self, route):
        """The values of the non-secret credentials (a login, a sender id ...)."""
        fields = PROVIDERS[route.provider].credential_fields if route.provider in PROVIDERS else ()
        stored = route.credentials or {}
        return {f.name: str(stored[f.name]) for f in fields if not f.secret and stored.get(f.name)}

    @extend_schema_field(serializers.DictField(child=serializers.BooleanField()))
    def get_secrets_set(self, route):
        """For each secret credential, whether a value is stored (the value itself never leaves)."""
        fields = PROVIDERS[route.provider].credential_fields if route.provider in PROVIDERS else ()
        stored = route.credentials or {}
        return {f.name: bool(stored.get(f.name)) for f in fields if f.secret}

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_callback_url(self, route):
        """Paste into the provider's cabinet as the delivery-report URL (null: the provider has none)."""
        cls = PROVIDERS.get(route.provider)
        return route_callback_url(route) if cls and cls.supports_callbacks else None

    @extend_schema_field(RouteHealthSerializer)
    def get_health(self, route):
        if route.is_broken:
            return {"status": "broken", "reason": route.broken_reason, "since": route.broken_at}
        return {"status": "ok" if route.is_active else "inactive", "reason": "", "since": None}

    def validate(self, attrs):
        route = self.instance
        provider = attrs.get("provider", route.provider if route else None)
        if route is not None and provider != route.provider:
            raise serializers.ValidationError(
                {"provider": [_("The provider of a route cannot change; add a new route instead.")]})
        fields = {f.name: f for f in PROVIDERS[provider].credential_fields}
        given = attrs.get("credentials", {})
        unknown = sorted(set(given) - set(fields))
        if unknown:
            raise serializers.ValidationError(
                {"credentials": [_("Unknown credential fields: %(names)s.") % {"names": ", ".join(unknown)}]})
        stored = route.credentials if route else {}
        missing = [f.label.get(get_language() or "en", f.name) if isinstance(f.label, dict) else f.name
                   for f in fields.values() if f.required and not (given.get(f.name) or stored.get(f.name))]
        if missing:
            raise serializers.ValidationError(
                {"credentials": [_("Fill in: %(names)s.") % {"names": ", ".join(missing)}]})
        return attrs

    def create(self, validated):
        return route_save(account=self.context["account"], **validated)

    def update(self, route, validated):
        validated.pop("provider", None)
        return route_save(account=route.account, provider=route.provider, route=route, **validated)


class ReorderSerializer(serializers.Serializer):
    ids = serializers.ListField(child=drf.IntegerField(min_value=1, max_value=inputs.BIGINT_MAX), allow_empty=False,
                                max_length=100,
                                help_text="every route id of the account, first to be tried first")


class TestSmsSerializer(serializers.Serializer):
    phone = serializers.CharField(max_length=40, help_text="international format, e.g. +79123456789")


class TestSmsResultSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()


class BalanceSerializer(serializers.Serializer):
    amount = serializers.CharField(help_text="a decimal number as the provider reports it, e.g. \"4122.56\"")
    currency = serializers.CharField(allow_blank=True)


@extend_schema(tags=["routes"], responses={**ERRORS})
class RouteViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                   mixins.UpdateModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    serializer_class = RouteSerializer
    pagination_class = None  # a handful of routes per account
    lookup_value_regex = "[^/]+"  # any id reaches the view, so a malformed one gets the API's JSON 404

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no caller
            return ProviderRoute.objects.none()
        return ProviderRoute.objects.filter(account=self.request.user.account).order_by("priority", "id")

    def get_object(self):
        # The ORM would read the id with int(): "١" (ARABIC-INDIC ONE) would find route 1.
        if inputs.db_id(self.kwargs.get(self.lookup_field)) is None:
            raise Http404
        return super().get_object()

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "account": self.request.user.account}

    def perform_destroy(self, route):
        route_delete(route=route)

    @extend_schema(request=ReorderSerializer, responses={200: RouteSerializer(many=True), **ERRORS})
    @action(detail=False, methods=["post"])
    def reorder(self, request):
        serializer = ReorderSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            routes = routes_reorder(account=request.user.account, route_ids=serializer.validated_data["ids"])
        except ValueError:
            raise serializers.ValidationError(
                {"ids": [_("List every route of this account exactly once.")]}) from None
        return Response(RouteSerializer(routes, many=True).data)

    @extend_schema(request=TestSmsSerializer,
                   responses={202: TestSmsResultSerializer, 422: OpenApiResponse(ErrorSerializer),
                              429: OpenApiResponse(ErrorSerializer, description="an abuse limit; see Retry-After"),
                              **ERRORS})
    @action(detail=True, methods=["post"], url_path="test-sms")
    def test_sms(self, request, pk=None):
        route = self.get_object()
        serializer = TestSmsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = delivery_create_test(account=request.user.account, phone=serializer.validated_data["phone"],
                                      route=route)
        return Response(TestSmsResultSerializer({"id": result.delivery.pk, "status": result.delivery.status}).data,
                        status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={200: BalanceSerializer, 422: OpenApiResponse(ErrorSerializer),
                              502: OpenApiResponse(ErrorSerializer), **ERRORS})
    @action(detail=True, methods=["get"])
    def balance(self, request, pk=None):
        route = self.get_object()
        try:
            balance = route_balance(route=route)  # a network call; no transaction is open here
        except NotImplementedError:
            raise ApiError(_("This provider does not report a balance."), "balance_unsupported", 422) from None
        except ProviderError as exc:
            logger.info("balance failed", extra={"route_id": route.pk, "error_class": str(exc.error_class)})
            raise ApiError(_("The provider refused or did not answer: %(reason)s") % {"reason": exc.error_class},
                           f"provider_{exc.error_class}", 502) from None
        return Response(BalanceSerializer({"amount": f"{balance.amount:f}", "currency": balance.currency}).data)


# --- abuse limits ---------------------------------------------------------------------------------------
class LimitValuesSerializer(serializers.Serializer):
    """The account's own limits. Null: the operator's ceiling. Only tighter than the ceiling: caps at
    most the ceiling (0 = no limit only where the ceiling is 0), the cooldown and the prefix window at
    least the ceiling, countries within the operator's list."""

    phone_cooldown_seconds = drf.IntegerField(min_value=0, max_value=86_400, allow_null=True, required=False)
    phone_per_hour = drf.IntegerField(min_value=0, max_value=100_000, allow_null=True, required=False)
    phone_per_day = drf.IntegerField(min_value=0, max_value=100_000, allow_null=True, required=False)
    account_per_hour = drf.IntegerField(min_value=0, max_value=10_000_000, allow_null=True, required=False)
    account_per_day = drf.IntegerField(min_value=0, max_value=10_000_000, allow_null=True, required=False)
    prefix_distinct_max = drf.IntegerField(min_value=0, max_value=100_000, allow_null=True, required=False)
    prefix_window_seconds = drf.IntegerField(min_value=1, max_value=86_400, allow_null=True, required=False)
    allowed_countries = serializers.ListField(
        child=serializers.CharField(max_length=2, min_length=1), allow_null=True, required=False, max_length=250,
        help_text='ISO 3166 codes such as ["RU", "KZ"], ["*"] for any country (only where the operator allows any), '
                  'null for the operator\'s list')

    def validate_allowed_countries(self, codes):
        if codes is None:
            return None
        codes = sorted({code.strip().upper() for code in codes})
        if codes == ["*"]:
            return codes
        unknown = [code for code in codes if code not in SUPPORTED_REGIONS]
        if unknown:
            raise serializers.ValidationError(_("Unknown country codes: %(codes)s.") % {"codes": ", ".join(unknown)})
        return codes


class AppliedLimitsSerializer(serializers.Serializer):
    """A complete set of limits (0 = no limit)."""

    phone_cooldown_seconds = serializers.IntegerField()
    phone_per_hour = serializers.IntegerField()
    phone_per_day = serializers.IntegerField()
    account_per_hour = serializers.IntegerField()
    account_per_day = serializers.IntegerField()
    prefix_distinct_max = serializers.IntegerField()
    prefix_window_seconds = serializers.IntegerField()
    allowed_countries = serializers.ListField(child=serializers.CharField(), help_text='["*"]: any country')
    allowed_calling_codes = serializers.ListField(
        child=serializers.IntegerField(),
        help_text="non-geographic calling codes (882 for +882, ...) the operator allows for this account; SMS to "
                  "every other non-geographic number are refused")


class LimitsSerializer(serializers.Serializer):
    ceilings = AppliedLimitsSerializer(help_text="the operator's limits for this account (set by smsgate's staff)")
    own = LimitValuesSerializer(help_text="this account's own values (null: the ceiling)")
    effective = AppliedLimitsSerializer(help_text="what the abuse guard applies now: the tighter of the two")


def _applied(limits) -> dict:
    values = {name: getattr(limits, name) for name in LIMIT_NUMBER_FIELDS}
    values["allowed_countries"] = sorted(limits.allowed_countries) if limits.allowed_countries is not None else ["*"]
    values["allowed_calling_codes"] = sorted(limits.allowed_calling_codes)
    return values


class LimitsView(APIView):
    """The account's abuse limits: how many SMS its phones and the account may get, and where to.
    The account may tighten the operator's ceilings, never loosen them."""

    @extend_schema(operation_id="limits", responses={200: LimitsSerializer, **ERRORS}, tags=["limits"])
    def get(self, request):
        return Response(self._body(request.user.account))

    @extend_schema(operation_id="limits_update", request=LimitValuesSerializer,
                   responses={200: LimitsSerializer, **ERRORS}, tags=["limits"])
    def put(self, request):
        serializer = LimitValuesSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            account_limits_save(account=request.user.account, values=serializer.validated_data)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        return Response(self._body(request.user.account))

    @staticmethod
    def _body(account):
        from deliveries.guard import ceilings_for, limits_tighten

        stored = AccountOwnLimits.objects.filter(account=account).first()
        own = {name: getattr(stored, name) if stored else None for name in LIMIT_NUMBER_FIELDS}
        countries = stored.allowed_countries.strip() if stored else ""
        own["allowed_countries"] = countries.replace(";", ",").split(",") if countries else None
        ceilings = ceilings_for(account)
        # Computed afresh, not from the guard's few-second cache: the answer to a PUT shows its effect.
        return {"ceilings": _applied(ceilings), "own": own, "effective": _applied(limits_tighten(ceilings, stored))}
