"""/api/v1/pipeline/: the digital pipeline's "send SMS" action as the owner sees it. The account's own key
(administrators only: the widget's dpSettings puts it into the action), the webhook URL, how many calls
without the right key were refused, and what became of the latest events (leads with no phone, refused
SMS, unsorted leads without a note, each with its reason). Thin: read, call a service, answer.
"""

from datetime import timedelta

from django.conf import settings
from django.db.models import Count
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from smsgate.drf import ERRORS

from .models import PipelineEvent, PipelineEventState, PipelineKey
from .pipeline_inbox import pipeline_key_get_or_create, pipeline_key_rotate

FIGURES_DAYS = 7
RECENT = 20


class PipelineEventSerializer(serializers.Serializer):
    lead_id = serializers.IntegerField()
    status_id = serializers.IntegerField(help_text="the stage")
    state = serializers.ChoiceField(choices=PipelineEventState.choices)
    state_label = serializers.CharField()
    reason = serializers.CharField(help_text="no_phone, lead_not_found, unsorted, a send refusal's code, ...")
    detail = serializers.CharField()
    delivery_id = serializers.UUIDField(allow_null=True)
    received_at = serializers.DateTimeField()


class PipelineSerializer(serializers.Serializer):
    key = serializers.CharField(allow_null=True, help_text="the account's key (administrators only, else null)")
    webhook_url = serializers.CharField()
    refused_calls = serializers.IntegerField(help_text="webhook calls refused for a missing or wrong key")
    refused_last_at = serializers.DateTimeField(allow_null=True)
    counts = serializers.DictField(child=serializers.IntegerField(),
                                   help_text=f"events of the last {FIGURES_DAYS} days by state")
    attention = PipelineEventSerializer(many=True, help_text="the latest events that sent no SMS or no note")


def _body(request, stored: PipelineKey | None) -> dict:
    account = request.user.account
    since = timezone.now() - timedelta(days=FIGURES_DAYS)
    events = PipelineEvent.objects.filter(account=account)
    counts = {row["state"]: row["n"] for row in events.filter(received_at__gte=since).order_by()
              .values("state").annotate(n=Count("id"))}
    attention = (events.exclude(state__in=(PipelineEventState.PENDING, PipelineEventState.READING))
                 .exclude(state=PipelineEventState.SENT, reason="").order_by("-id")[:RECENT])
    labels = dict(PipelineEventState.choices)
    return PipelineSerializer({
        "key": stored.key if stored is not None and request.user.is_admin else None,
        "webhook_url": f"{settings.SMSGATE_PUBLIC_URL}/amocrm/pipeline",
        "refused_calls": stored.refused_count if stored else 0,
        "refused_last_at": stored.refused_last_at if stored else None,
        "counts": {state: counts.get(state, 0) for state in PipelineEventState.values},
        "attention": [{"lead_id": e.lead_id, "status_id": e.status_id, "state": e.state,
                       "state_label": str(labels[e.state]), "reason": e.reason, "detail": e.detail,
                       "delivery_id": e.delivery_id, "received_at": e.received_at} for e in attention],
    }).data


class PipelineView(APIView):
    @extend_schema(operation_id="pipeline", responses={200: PipelineSerializer, **ERRORS}, tags=["pipeline"])
    def get(self, request):
        """The action's key (made on an administrator's first look), refused calls, latest outcomes."""
        account = request.user.account
        stored = (pipeline_key_get_or_create(account=account) if request.user.is_admin
                  else PipelineKey.objects.filter(account=account).first())
        return Response(_body(request, stored))


class PipelineKeyView(APIView):
    @extend_schema(operation_id="pipeline_key_rotate", request=None, responses={200: PipelineSerializer, **ERRORS},
                   tags=["pipeline"])
    def post(self, request):
        """A new key (administrators): actions saved with the old one are refused until saved again."""
        return Response(_body(request, pipeline_key_rotate(account=request.user.account)))
