"""/api/v1/crm/list-sends/: an SMS to each lead or contact selected in an amoCRM list (the widget's llist/clist
dialog). Every user of the account may preview and send (like the card); each sees the account's sends.
Thin: validate, call crm.lists, answer. Another account's send is a 404.
"""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import ActiveAccount
from smsgate import drf
from smsgate.drf import ERRORS, ErrorSerializer

from . import lists
from .activity import MAX_DAYS, OUTCOMES, crm_activity
from .apis import MAX_ID, AmoIdField, StrictCharField, StrictIntegerField
from .models import ENTITY_TYPES, ListSend, ListSendState

RECENT = 20
LIST_ERRORS = {**ERRORS, 409: OpenApiResponse(ErrorSerializer, description="amocrm_not_connected: install the widget "
                                                                        "again"),
               503: OpenApiResponse(ErrorSerializer, description="amoCRM cannot be read now")}


class ListSendRequestSerializer(serializers.Serializer):
    entity_type = serializers.ChoiceField(choices=ENTITY_TYPES)
    ids = serializers.ListField(child=AmoIdField(), min_length=1, max_length=lists.MAX_RECIPIENTS,
                                help_text=f"the selected leads or contacts, at most {lists.MAX_RECIPIENTS}")
    template_id = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_ID)
    text = StrictCharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False,
                           max_length=lists.MAX_TEXT, help_text="the sender's own text, or give template_id")


class SampleSerializer(serializers.Serializer):
    entity_id = serializers.IntegerField()
    name = serializers.CharField()
    phone = serializers.CharField()
    text = serializers.CharField()
    parts = serializers.IntegerField()
    encoding = serializers.CharField()


class ListPreviewSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    found = serializers.IntegerField(help_text="in the account's amoCRM")
    with_phone = serializers.IntegerField(help_text="will get an SMS")
    without_phone = serializers.IntegerField()
    not_found = serializers.IntegerField()
    parts = serializers.IntegerField(help_text="SMS parts in all")
    samples = SampleSerializer(many=True, help_text="the first recipients' SMS")


class ListSendSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    entity_type = serializers.CharField()
    total = serializers.SerializerMethodField()
    done = serializers.IntegerField(source="position")
    state = serializers.ChoiceField(choices=ListSendState.choices)
    state_label = serializers.CharField(source="get_state_display")
    cancel_requested = serializers.BooleanField()
    sent = serializers.IntegerField()
    no_phone = serializers.IntegerField()
    not_found = serializers.IntegerField()
    refused = serializers.IntegerField()
    refused_by = serializers.DictField(child=serializers.IntegerField(), help_text="limits, crm_caps, policy, ...")
    template_id = serializers.IntegerField(allow_null=True)
    sent_by = serializers.IntegerField(source="amo_user_id", allow_null=True)
    detail = serializers.CharField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_total(self, send) -> int:
        return len(send.entity_ids)


def _request(request) -> dict:
    serializer = ListSendRequestSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class ListSendsView(APIView):
    permission_classes = [ActiveAccount]

    @extend_schema(operation_id="crm_list_sends_create", request=ListSendRequestSerializer,
                   responses={201: ListSendSerializer, 422: OpenApiResponse(ErrorSerializer), **ERRORS}, tags=["crm"])
    def post(self, request):
        """Start a send to the selected recipients (in the background; follow it with GET .../<id>/)."""
        data = _request(request)
        send = lists.list_send_create(account=request.user.account, amo_user_id=request.user.claims.user_id,
                                      entity_type=data["entity_type"], ids=data["ids"],
                                      template_id=data.get("template_id"), text=data.get("text"))
        return Response(ListSendSerializer(send).data, status=201)

    @extend_schema(operation_id="crm_list_sends_list", responses={200: ListSendSerializer(many=True), **ERRORS},
                   tags=["crm"])
    def get(self, request):
        """The account's latest list sends, newest first."""
        sends = ListSend.objects.filter(account=request.user.account).order_by("-created_at", "-id")[:RECENT]
        return Response(ListSendSerializer(sends, many=True).data)


class ListSendPreviewView(APIView):
    permission_classes = [ActiveAccount]

    @extend_schema(operation_id="crm_list_sends_preview", request=ListSendRequestSerializer,
                   responses={200: ListPreviewSerializer, **LIST_ERRORS}, tags=["crm"])
    def post(self, request):
        """What the send would do: recipients with a phone, the first SMS, the parts (reads amoCRM)."""
        data = _request(request)
        return Response(ListPreviewSerializer(lists.list_send_preview(
            account=request.user.account, entity_type=data["entity_type"], ids=data["ids"],
            template_id=data.get("template_id"), text=data.get("text"))).data)


class ListSendView(APIView):
    permission_classes = [ActiveAccount]

    @extend_schema(operation_id="crm_list_send", responses={200: ListSendSerializer, **ERRORS}, tags=["crm"])
    def get(self, request, send_id: int):
        """A send's progress."""
        return Response(ListSendSerializer(lists.list_send_of(account=request.user.account, send_id=send_id)).data)


class ListSendCancelView(APIView):
    permission_classes = [ActiveAccount]

    @extend_schema(operation_id="crm_list_send_cancel", request=None, responses={200: ListSendSerializer, **ERRORS},
                   tags=["crm"])
    def post(self, request, send_id: int):
        """Stop a send after the batch in hand (one not started stops at once)."""
        return Response(ListSendSerializer(lists.list_send_cancel(account=request.user.account,
                                                                  send_id=send_id)).data)


# --- what the owner sees: the automations' and lists' sends by outcome ----------------------------------------------
def _outcome_fields():
    return {name: serializers.IntegerField() for name in OUTCOMES}


PipelineOutcomes = type("PipelineOutcomes", (serializers.Serializer,), {
    **_outcome_fields(),
    "refused_calls": serializers.IntegerField(help_text="webhook calls without the account's pipeline key (all time)"),
    "refused_calls_last_at": serializers.DateTimeField(allow_null=True)})
SalesbotOutcomes = type("SalesbotOutcomes", (serializers.Serializer,), {
    **_outcome_fields(),
    "bots_not_continued": serializers.IntegerField(help_text="bots amoCRM no longer let smsgate continue")})
ListOutcomes = type("ListOutcomes", (serializers.Serializer,), {
    **_outcome_fields(), "sends": serializers.IntegerField()})


class ActivitySerializer(serializers.Serializer):
    days = serializers.IntegerField()
    since = serializers.DateTimeField()
    pipeline = PipelineOutcomes()
    salesbot = SalesbotOutcomes()
    list = ListOutcomes()


class ActivityParamsSerializer(serializers.Serializer):
    days = drf.IntegerField(required=False, default=7, min_value=1, max_value=MAX_DAYS)


class ActivityView(APIView):
    permission_classes = [ActiveAccount]

    @extend_schema(operation_id="crm_activity", parameters=[ActivityParamsSerializer],
                   responses={200: ActivitySerializer, **ERRORS}, tags=["crm"])
    def get(self, request):
        """The pipeline's, Salesbot's and lists' SMS of the last days by outcome: sent, skipped (no phone),
        refused (limits; no provider key of the account's own; other), failed, in progress."""
        params = ActivityParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        return Response(ActivitySerializer(crm_activity(account=request.user.account,
                                                        days=params.validated_data["days"])).data)
