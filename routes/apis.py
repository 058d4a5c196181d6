"""The account API of routes (the widget's settings page): the provider catalogue, the account's
routes (secrets write-only), their order and each one's balance. Thin: validate, call a service,
answer. Every query starts from `request.user.account`. (A test SMS through a route is a delivery:
deliveries/apis.py.)"""

import logging

from django.http import Http404
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from smsgate import drf, inputs
from smsgate.drf import ERRORS, ApiError, ErrorSerializer

from .models import ProviderRoute
from .providers import PROVIDERS
from .providers.base import ProviderError
from .selectors import CONSOLE, console_allowed, provider_catalogue, route_sends_nothing
from .services import route_balance, route_callback_url, route_delete, route_save, routes_reorder

logger = logging.getLogger(__name__)

MAX_CREDENTIAL_LENGTH = 500


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
    sends_nothing = serializers.SerializerMethodField()
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

    def get_sends_nothing(self, route) -> bool:
        """True for a `console` route where the deployment does not allow it: its SMS are only logged."""
        return route_sends_nothing(route)

    def validate_provider(self, provider):
        if provider == CONSOLE and self.instance is None and not console_allowed():
            raise serializers.ValidationError(_(
                "The console provider does not send SMS (it only writes them to the service's log), "
                "so this service does not offer it. Choose a real SMS provider."))
        return provider

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


