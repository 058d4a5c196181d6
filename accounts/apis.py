"""The account API of accounts (what the widget's settings page calls): the account, and its abuse
limits. Thin: validate, call a service, answer. Every query starts from `request.user.account`, so
one account never reaches another's rows. Routes (routes/apis.py), deliveries (deliveries/apis.py)
and templates (crm/apis.py) have their own."""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from phonenumbers import SUPPORTED_REGIONS
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView
from django.utils.translation import gettext_lazy as _

from smsgate import drf
from smsgate.drf import ERRORS

from .limits import ceilings_for, limits_tighten
from .models import LIMIT_NUMBER_FIELDS, AccountOwnLimits
from .services import account_limits_save


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
            "route_count": account.routes.count(),  # the routes app's relation: no import needed
        }).data)


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
    crm_per_hour = drf.IntegerField(min_value=0, max_value=10_000_000, allow_null=True, required=False,
                                    help_text="SMS sent from amoCRM (cards, pipeline, Salesbot, lists) per hour")
    crm_per_day = drf.IntegerField(min_value=0, max_value=10_000_000, allow_null=True, required=False,
                                   help_text="SMS sent from amoCRM per day")
    crm_user_per_hour = drf.IntegerField(min_value=0, max_value=1_000_000, allow_null=True, required=False,
                                         help_text="SMS one amoCRM user may send from cards per hour")
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
    crm_per_hour = serializers.IntegerField(help_text="SMS sent from amoCRM per hour")
    crm_per_day = serializers.IntegerField(help_text="SMS sent from amoCRM per day")
    crm_user_per_hour = serializers.IntegerField(help_text="SMS one amoCRM user may send from cards per hour")
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
        stored = AccountOwnLimits.objects.filter(account=account).first()
        own = {name: getattr(stored, name) if stored else None for name in LIMIT_NUMBER_FIELDS}
        countries = stored.allowed_countries.strip() if stored else ""
        own["allowed_countries"] = countries.replace(";", ",").split(",") if countries else None
        ceilings = ceilings_for(account)
        # Computed afresh, not from the guard's few-second cache: the answer to a PUT shows its effect.
        return {"ceilings": _applied(ceilings), "own": own, "effective": _applied(limits_tighten(ceilings, stored))}
