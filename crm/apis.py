"""The account API of crm. Thin: validate, call a service, answer.

- /api/v1/templates/: an account's SMS templates (admins write, everyone of the account reads), the
  markers a template may use, and a preview of a template or a free text, against amoCRM data the
  caller holds (API v4 shapes) or against a card the server reads (`entity_type`, `entity_id`).
- /api/v1/crm/cards/<entity_type>/<entity_id>/: a card's contacts and phones (crm.cards).
- /api/v1/crm/sends/: an SMS from a card (POST, every user of the account), and a card's SMS (GET).

Every query starts from `request.user.account`: another account's template, entity or SMS is a 404
or an empty list. One module over ~400 lines because its strict fields and amoCRM shapes serve both
the templates and the sends; they would otherwise be imported across two modules of one API.
"""

import math

from django.conf import settings
from django.http import Http404
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import ActiveAccount
from deliveries.models import Delivery, DeliveryStatus
from smsgate import drf
from smsgate.drf import ERRORS, ApiError, ErrorSerializer

from . import markers
from .cards import card_preview, card_read, card_send
from .models import ENTITY_TYPES, CrmOrigin, NoteState, SmsTemplate
from .notes import failure_reason
from .selectors import crm_message_of, crm_messages_of_entity, template_of, templates_of
from .services import (
    NAME_MAX_LENGTH,
    TemplateInvalid,
    template_create,
    template_delete,
    template_preview,
    template_update,
)

MAX_ID = 2**53  # amoCRM ids are integers; anything past a JSON-safe integer is not one of them
MAX_STRING = 10_000


# --- strict fields: the caller's JSON types are checked, never coerced ("1" is not 1, 1 is not "1") ---
class StrictCharField(serializers.CharField):
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data):
        if not isinstance(data, int) or isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class AmoIdField(StrictIntegerField):
    def __init__(self, **kwargs):
        super().__init__(min_value=1, max_value=MAX_ID, **kwargs)


def _text_field(max_length=MAX_STRING, **kwargs):
    return StrictCharField(max_length=max_length, allow_blank=True, allow_null=True, required=False,
                           trim_whitespace=False, **kwargs)


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"},
                                {"type": "object", "additionalProperties": True}], "nullable": True})
class AmoValueField(serializers.Field):
    """A custom field's `value`: a string, a number, a flag, or a small object (legal entity, file)."""

    default_error_messages = {"invalid": _("Not a value amoCRM gives a field.")}

    def to_internal_value(self, data):
        if self._scalar(data):
            return data
        if isinstance(data, dict) and len(data) <= 50 and all(
                isinstance(k, str) and len(k) <= 100 and (v is None or self._scalar(v)) for k, v in data.items()):
            return data
        self.fail("invalid")

    @staticmethod
    def _scalar(value) -> bool:
        if isinstance(value, bool):
            return True
        if isinstance(value, int):
            return abs(value) <= 2**63
        if isinstance(value, float):
            return math.isfinite(value)
        return isinstance(value, str) and len(value) <= MAX_STRING

    def to_representation(self, value):
        return value


# --- amoCRM API v4 shapes (only what markers read; other keys are ignored) ---------------------------
class AmoCustomFieldValueSerializer(serializers.Serializer):
    value = AmoValueField(required=False, allow_null=True)
    enum_id = StrictIntegerField(required=False, allow_null=True, min_value=0, max_value=MAX_ID)
    enum_code = _text_field(100)
    enum = _text_field(100)


class AmoCustomFieldSerializer(serializers.Serializer):
    field_id = AmoIdField()
    field_name = _text_field(255)
    field_code = _text_field(100)
    field_type = _text_field(50)
    values = serializers.ListField(child=AmoCustomFieldValueSerializer(), max_length=100, allow_null=True,
                                   required=False)


def _custom_fields():
    return serializers.ListField(child=AmoCustomFieldSerializer(), max_length=500, allow_null=True, required=False,
                                 help_text="custom_fields_values as API v4 returns them")


class AmoLinkedContactSerializer(serializers.Serializer):
    id = AmoIdField()
    is_main = StrictBooleanField(required=False)


class AmoLeadEmbeddedSerializer(serializers.Serializer):
    contacts = serializers.ListField(child=AmoLinkedContactSerializer(), max_length=500, required=False)


class AmoLeadSerializer(serializers.Serializer):
    """A lead as `GET /api/v4/leads/{id}?with=contacts` returns it."""

    id = AmoIdField()
    name = _text_field(1000)
    price = StrictIntegerField(required=False, allow_null=True, min_value=-10**15, max_value=10**15)
    responsible_user_id = StrictIntegerField(required=False, allow_null=True, min_value=0, max_value=MAX_ID)
    custom_fields_values = _custom_fields()
    _embedded = AmoLeadEmbeddedSerializer(required=False)


class AmoContactSerializer(serializers.Serializer):
    """A contact as `GET /api/v4/contacts/{id}` returns it."""

    id = AmoIdField()
    name = _text_field(1000)
    first_name = _text_field(1000)
    last_name = _text_field(1000)
    responsible_user_id = StrictIntegerField(required=False, allow_null=True, min_value=0, max_value=MAX_ID)
    custom_fields_values = _custom_fields()


class AmoUserSerializer(serializers.Serializer):
    """A user as `GET /api/v4/users` lists them."""

    id = AmoIdField()
    name = _text_field(1000)
    email = _text_field(255)


class AmoDatetimeSettingsSerializer(serializers.Serializer):
    timezone = _text_field(64, help_text="e.g. Europe/Moscow")


class AmoAccountEmbeddedSerializer(serializers.Serializer):
    datetime_settings = AmoDatetimeSettingsSerializer(required=False)


class AmoAccountSerializer(serializers.Serializer):
    """The account as `GET /api/v4/account?with=datetime_settings` returns it."""

    id = AmoIdField(required=False)
    name = _text_field(1000)
    _embedded = AmoAccountEmbeddedSerializer(required=False)


class PreviewContextSerializer(serializers.Serializer):
    lead = AmoLeadSerializer(required=False, allow_null=True)
    contact = AmoContactSerializer(required=False, allow_null=True, help_text="the lead's main contact, or the card's")
    users = serializers.ListField(child=AmoUserSerializer(), max_length=1000, required=False,
                                  help_text="the account's users (for the responsible user's name)")
    account = AmoAccountSerializer(required=False, allow_null=True)


# --- templates ---------------------------------------------------------------------------------------
class TemplateSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = StrictCharField(max_length=NAME_MAX_LENGTH)
    text = StrictCharField(max_length=settings.SMSGATE_MAX_TEXT_LENGTH, trim_whitespace=False,
                           help_text="with amoCRM markers such as {{contact.first_name}} (see /templates/markers/)")
    is_active = StrictBooleanField(required=False, default=True)
    markers = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def get_markers(self, template) -> list[str]:
        """The markers the text uses, e.g. ["contact.first_name", "lead.cf.123"]."""
        return markers.markers_in(template.text)

    def create(self, validated):
        return _saved(lambda: template_create(account=self.context["account"], **validated))

    def update(self, template, validated):
        return _saved(lambda: template_update(template=template, **validated))


def _saved(save):
    try:
        return save()
    except TemplateInvalid as exc:
        if exc.code != "invalid":
            raise ApiError(" ".join(str(m) for m in exc.errors.get("non_field_errors", [])), exc.code, 400) from None
        raise serializers.ValidationError({field: [str(m) for m in messages]
                                           for field, messages in exc.errors.items()}) from None


class MarkerSerializer(serializers.Serializer):
    key = serializers.CharField(help_text='e.g. "lead.name"; for a field: "lead.cf", written {{lead.cf.<field id>}}')
    marker = serializers.CharField(help_text="as written in a text")
    label = serializers.CharField()
    group = serializers.ChoiceField(choices=sorted(markers.GROUPS))
    group_label = serializers.CharField()
    needs_field_id = serializers.BooleanField()
    amocrm = serializers.BooleanField(help_text="false: smsgate's own marker, amoCRM itself does not fill it in")


class MarkerErrorSerializer(serializers.Serializer):
    code = serializers.ChoiceField(choices=["unknown", "unsupported", "malformed", "unclosed"])
    placeholder = serializers.CharField()
    message = serializers.CharField()


class PreviewRequestSerializer(serializers.Serializer):
    template_id = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_ID,
                                     help_text="one of the account's templates, or give `text`")
    text = StrictCharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False,
                           max_length=settings.SMSGATE_MAX_TEXT_LENGTH, help_text="a free text, or give `template_id`")
    context = PreviewContextSerializer(required=False, help_text="amoCRM data in API v4 shapes")
    entity_type = serializers.ChoiceField(choices=ENTITY_TYPES, required=False,
                                          help_text="a card to fill the text from (read by the server), "
                                                    "instead of `context`")
    entity_id = AmoIdField(required=False)
    phone = StrictCharField(required=False, max_length=40,
                            help_text="with a card: the recipient, whose contact fills {{contact.*}} "
                                      "(else the main contact)")

    def validate(self, attrs):
        if (attrs.get("template_id") is None) == (attrs.get("text") is None):
            raise serializers.ValidationError({"non_field_errors": [_("Give either template_id or text.")]})
        if ("entity_type" in attrs) != ("entity_id" in attrs):
            raise serializers.ValidationError({"non_field_errors": [_("Give entity_type and entity_id together.")]})
        if "entity_type" in attrs and "context" in attrs:
            raise serializers.ValidationError({"non_field_errors": [_("Give either a card or context.")]})
        if "phone" in attrs and "entity_type" not in attrs:
            raise serializers.ValidationError({"phone": [_("A phone is only read with a card.")]})
        return attrs


class PreviewSerializer(serializers.Serializer):
    text = serializers.CharField(help_text="as it would be sent")
    length = serializers.IntegerField()
    encoding = serializers.ChoiceField(choices=Delivery._meta.get_field("encoding").choices)  # the same enum
    units = serializers.IntegerField(help_text="GSM-7 septets or UTF-16 units")
    parts = serializers.IntegerField(help_text="SMS parts, counted as the sending path counts them")
    missing = serializers.ListField(child=serializers.CharField(), help_text="markers with no value, rendered empty")
    errors = MarkerErrorSerializer(many=True, help_text="invalid placeholders, left as written")
    ucs2_from = serializers.ListField(child=serializers.CharField(),
                                      help_text="markers whose values turned a GSM-7 text into UCS-2")
    too_long = serializers.BooleanField()
    max_length = serializers.IntegerField()


AMO_ERRORS = {**ERRORS, 503: OpenApiResponse(ErrorSerializer, description="amoCRM cannot be read now "
                                                                         "(code amocrm_unavailable)")}


@extend_schema(tags=["templates"], responses={**ERRORS})
class TemplateViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                      mixins.UpdateModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    serializer_class = TemplateSerializer
    pagination_class = None  # at most MAX_TEMPLATES_PER_ACCOUNT
    lookup_value_regex = "[^/]+"  # any id reaches the view, so a malformed one gets the API's JSON 404

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no caller
            return SmsTemplate.objects.none()
        return templates_of(account=self.request.user.account)

    def get_permissions(self):
        if self.action == "preview":  # a read, though a POST: every user of the account previews
            return [ActiveAccount()]
        return super().get_permissions()

    def get_serializer_context(self):
        account = None if getattr(self, "swagger_fake_view", False) else self.request.user.account
        return {**super().get_serializer_context(), "account": account}

    def perform_destroy(self, template):
        template_delete(template=template)

    @extend_schema(responses={200: MarkerSerializer(many=True), **ERRORS})
    @action(detail=False, methods=["get"])
    def markers(self, request):
        """The markers a template may use, with labels in the request's language (the widget's picker)."""
        rows = [{"key": spec.key, "marker": "{{%s.ID}}" % spec.key if spec.needs_field_id else "{{%s}}" % spec.key,
                 "label": str(spec.label), "group": spec.group, "group_label": str(markers.GROUPS[spec.group]),
                 "needs_field_id": spec.needs_field_id, "amocrm": spec.amocrm}
                for spec in markers.MARKERS if not spec.alias_of]
        return Response(MarkerSerializer(rows, many=True).data)

    @extend_schema(request=PreviewRequestSerializer, responses={200: PreviewSerializer, **AMO_ERRORS})
    @action(detail=False, methods=["post"])
    def preview(self, request):
        """A template or a free text filled in from the amoCRM data given, or from a card the server
        reads: the text, its encoding and parts, the markers left empty, and which values turned it
        into UCS-2."""
        serializer = PreviewRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        account = request.user.account
        if data.get("entity_type"):
            result = card_preview(account=account, entity_type=data["entity_type"], entity_id=data["entity_id"],
                                  text=data.get("text"), template_id=data.get("template_id"),
                                  phone=data.get("phone"))
        else:
            if data.get("template_id") is not None:
                template = template_of(account=account, template_id=data["template_id"])
                if template is None:
                    raise Http404
                text = template.text
            else:
                text = data["text"]
            given = data.get("context") or {}
            context = markers.context_for(lead=given.get("lead"), contact=given.get("contact"),
                                          users=given.get("users"), account=given.get("account"))
            result = template_preview(text=text, context=context)
        return Response(PreviewSerializer({
            **{name: getattr(result, name) for name in ("text", "length", "encoding", "units", "parts", "missing",
                                                          "ucs2_from", "too_long")},
            "errors": [{"code": e.code, "placeholder": e.placeholder, "message": e.message} for e in result.errors],
            "max_length": settings.SMSGATE_MAX_TEXT_LENGTH,
        }).data)


# --- the card and its SMS ------------------------------------------------------------------------------
class CardPhoneSerializer(serializers.Serializer):
    phone = serializers.CharField(help_text="E.164 where amoCRM's value reads as a number")
    type = serializers.CharField(help_text="PHONE's enum code: WORK, WORKDD, MOB, FAX, HOME, OTHER")


class CardContactSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    is_main = serializers.BooleanField()
    phones = CardPhoneSerializer(many=True)


class CardSerializer(serializers.Serializer):
    entity_type = serializers.ChoiceField(choices=ENTITY_TYPES)
    entity_id = serializers.IntegerField()
    name = serializers.CharField()
    contacts = CardContactSerializer(many=True)


def _entity_from_path(entity_type: str, entity_id: str) -> tuple[str, int]:
    """The path's entity, or 404: only `leads`/`contacts` and an ASCII id amoCRM could have."""
    if entity_type not in ENTITY_TYPES or not (entity_id.isascii() and entity_id.isdigit()) or len(entity_id) > 16:
        raise Http404
    number = int(entity_id)
    if not 0 < number <= MAX_ID:
        raise Http404
    return entity_type, number


class CardView(APIView):
    """A lead's or a contact's contacts and their phones, as amoCRM's API returns them for this account
    (cached about a minute): what the card's panel offers to send to."""

    permission_classes = [ActiveAccount]

    @extend_schema(operation_id="crm_card", responses={200: CardSerializer, **AMO_ERRORS}, tags=["crm"])
    def get(self, request, entity_type, entity_id):
        entity_type, entity_id = _entity_from_path(entity_type, entity_id)
        card = card_read(account=request.user.account, entity_type=entity_type, entity_id=entity_id)
        return Response(CardSerializer(card).data)


class ClientKeyField(StrictCharField):
    def __init__(self, **kwargs):
        super().__init__(max_length=64, min_length=8, required=False, allow_null=True,
                         help_text="the widget's key for this send (a UUID): the same key sends once", **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not (value.isascii() and all(c.isalnum() or c in "-_" for c in value)):
            self.fail("invalid")
        return value


class SendRequestSerializer(serializers.Serializer):
    entity_type = serializers.ChoiceField(choices=ENTITY_TYPES)
    entity_id = AmoIdField()
    phone = StrictCharField(max_length=40, help_text="one of the card's contacts' phones")
    text = StrictCharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False,
                           max_length=settings.SMSGATE_MAX_TEXT_LENGTH,
                           help_text="a free text (markers are filled in), or give `template_id`")
    template_id = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_ID)
    origin = serializers.ChoiceField(choices=[CrmOrigin.PANEL.value, CrmOrigin.FEED.value], default="panel",
                                     help_text="panel: smsgate writes the sms_out note; feed: amoCRM's own SMS "
                                               "input, amoCRM writes it")
    client_key = ClientKeyField()

    def validate(self, attrs):
        if (attrs.get("template_id") is None) == (attrs.get("text") is None):
            raise serializers.ValidationError({"non_field_errors": [_("Give either template_id or text.")]})
        return attrs


class CrmSendSerializer(serializers.Serializer):
    """An SMS sent from a card, as the card's history shows it (full text: the account's own customers)."""

    id = serializers.UUIDField(source="delivery_id")
    status = serializers.ChoiceField(choices=DeliveryStatus.choices, source="delivery.status")
    status_label = serializers.CharField(source="delivery.get_status_display")
    phone = serializers.CharField(source="delivery.phone")
    text = serializers.CharField(source="delivery.text")
    encoding = serializers.ChoiceField(choices=Delivery._meta.get_field("encoding").choices,
                                       source="delivery.encoding")
    parts = serializers.IntegerField(source="delivery.segments")
    origin = serializers.ChoiceField(choices=CrmOrigin.choices)
    entity_type = serializers.ChoiceField(choices=ENTITY_TYPES)
    entity_id = serializers.IntegerField()
    created_at = serializers.DateTimeField(source="delivery.created_at")
    finished_at = serializers.DateTimeField(source="delivery.finished_at", allow_null=True)
    error_text = serializers.SerializerMethodField()
    sent_by = serializers.IntegerField(source="amo_user_id", allow_null=True, help_text="the amoCRM user's id")
    note_state = serializers.ChoiceField(choices=NoteState.choices)

    def get_error_text(self, message) -> str:
        """Why it did not get through, in the request's language ("" while it may still)."""
        return failure_reason(status=message.delivery.status, error_class=message.delivery.error_class)


class SendHistorySerializer(serializers.Serializer):
    results = CrmSendSerializer(many=True)
    in_flight = serializers.BooleanField(help_text="some are still on their way: ask again in a few seconds")


class SendHistoryParamsSerializer(serializers.Serializer):
    entity_type = serializers.ChoiceField(choices=ENTITY_TYPES)
    entity_id = drf.IntegerField(min_value=1, max_value=MAX_ID)


SEND_ERRORS = {**AMO_ERRORS,
               422: OpenApiResponse(ErrorSerializer, description="no_route, policy or crm_not_allowed"),
               429: OpenApiResponse(ErrorSerializer, description="limits or crm_caps; see Retry-After")}


class CrmSendsView(APIView):
    """SMS sent from a card: send one (every user of the account; the phone must be on the card) or
    list the card's (newest first, up to 50)."""

    permission_classes = [ActiveAccount]

    @extend_schema(operation_id="crm_sends_create", request=SendRequestSerializer,
                   responses={201: CrmSendSerializer, **SEND_ERRORS}, tags=["crm"])
    def post(self, request):
        serializer = SendRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        account = request.user.account
        sent = card_send(account=account, amo_user_id=request.user.claims.user_id, entity_type=data["entity_type"],
                         entity_id=data["entity_id"], phone=data["phone"], text=data.get("text"),
                         template_id=data.get("template_id"), origin=data["origin"],
                         client_key=data.get("client_key"))
        message = crm_message_of(account=account, delivery_id=sent.result.delivery_id)
        return Response(CrmSendSerializer(message).data, status=201)  # a repeated key: the first send, again

    @extend_schema(operation_id="crm_sends_list", parameters=[SendHistoryParamsSerializer],
                   responses={200: SendHistorySerializer, **ERRORS}, tags=["crm"])
    def get(self, request):
        params = SendHistoryParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        messages, in_flight = crm_messages_of_entity(account=request.user.account, **params.validated_data)
        return Response(SendHistorySerializer({"results": messages, "in_flight": in_flight}).data)
