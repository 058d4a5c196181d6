"""What the owner sees of the SMS amoCRM's automations and lists sent: the digital pipeline's action, Salesbot's
step and list sends of the last days, each with its outcome, counted from their own records (PipelineEvent,
SalesbotRequest, ListSend):

- sent: the SMS was accepted (for Salesbot: the provider took it, the bot went on through "sent");
- no_phone: skipped, no contact with a phone that can get an SMS (lists: or not found in amoCRM);
- refused_limits: refused by the abuse limits or the CRM caps (codes limits, crm_caps);
- refused_no_key: refused because the account has no SMS provider key of its own (no_route, crm_not_allowed);
  for the pipeline also the webhook calls without the account's pipeline key (`refused_calls`, all time);
- refused_other: other refusals (policy, a text that cannot be sent, ...);
- failed: amoCRM could not be read, the lead is gone, the provider refused it or did not answer in time;
- in_progress: not decided yet.

May call: crm's models.
"""

from datetime import timedelta

from django.db.models import Count, Sum
from django.utils import timezone

from accounts.models import Account

from .models import ListSend, PipelineEvent, PipelineEventState, PipelineKey, SalesbotRequest, SalesbotState

OUTCOMES = ("sent", "no_phone", "refused_limits", "refused_no_key", "refused_other", "failed", "in_progress")
LIMIT_CODES = {"limits", "crm_caps"}
NO_KEY_CODES = {"no_route", "crm_not_allowed"}
MAX_DAYS = 90


def _refusal(code: str) -> str:
    if code in LIMIT_CODES:
        return "refused_limits"
    if code in NO_KEY_CODES:
        return "refused_no_key"
    return "refused_other"


def _empty() -> dict:
    return dict.fromkeys(OUTCOMES, 0)


def _pipeline(account: Account, since) -> dict:
    counts = _empty()
    rows = (PipelineEvent.objects.filter(account=account, received_at__gte=since).order_by()
            .values("state", "reason").annotate(n=Count("id")))
    for row in rows:
        state, n = row["state"], row["n"]
        if state == PipelineEventState.SENT:
            counts["sent"] += n
        elif state == PipelineEventState.NO_PHONE:
            counts["no_phone"] += n
        elif state == PipelineEventState.REFUSED:
            counts[_refusal(row["reason"])] += n
        elif state in (PipelineEventState.PENDING, PipelineEventState.READING):
            counts["in_progress"] += n
        else:
            counts["failed"] += n
    key = PipelineKey.objects.filter(account=account).values("refused_count", "refused_last_at").first() or {}
    counts["refused_calls"] = key.get("refused_count", 0)
    counts["refused_calls_last_at"] = key.get("refused_last_at")
    return counts


def _salesbot(account: Account, since) -> dict:
    counts = _empty()
    rows = (SalesbotRequest.objects.filter(account=account, received_at__gte=since).order_by()
            .values("state", "exit", "reason", "delivery_id").annotate(n=Count("id")))
    for row in rows:
        n = row["n"]
        if not row["exit"]:
            counts["in_progress"] += n
        elif row["exit"] == "sent":
            counts["sent"] += n
        elif row["reason"] == "no_phone":
            counts["no_phone"] += n
        elif row["delivery_id"] is None and row["reason"] in LIMIT_CODES | NO_KEY_CODES | {"policy", "invalid",
                                                                                           "phone"}:
            counts[_refusal(row["reason"])] += n
        else:
            counts["failed"] += n
    counts["bots_not_continued"] = SalesbotRequest.objects.filter(
        account=account, received_at__gte=since, state=SalesbotState.GAVE_UP).count()
    return counts


def _lists(account: Account, since) -> dict:
    counts = _empty()
    sends = ListSend.objects.filter(account=account, created_at__gte=since)
    totals = sends.aggregate(sent=Sum("sent"), no_phone=Sum("no_phone"), not_found=Sum("not_found"))
    counts["sent"] = totals["sent"] or 0
    counts["no_phone"] = (totals["no_phone"] or 0) + (totals["not_found"] or 0)
    for refused_by, position, total_ids, state in sends.values_list("refused_by", "position", "entity_ids", "state"):
        for code, n in (refused_by or {}).items():
            counts[_refusal(code)] += n
        if state in ("pending", "running"):
            counts["in_progress"] += len(total_ids) - position
    counts["sends"] = sends.count()
    return counts


def crm_activity(*, account: Account, days: int = 7) -> dict:
    """The account's pipeline, Salesbot and list sends of the last `days` days by outcome."""
    days = max(1, min(int(days), MAX_DAYS))
    since = timezone.now() - timedelta(days=days)
    return {"days": days, "since": since, "pipeline": _pipeline(account, since), "salesbot": _salesbot(account, since),
            "list": _lists(account, since)}
