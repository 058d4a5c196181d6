"""Business logic of crm: SMS templates (create, change, delete) and their preview."""

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import Account
from deliveries.segments import UCS2, segment_info

from . import markers
from .models import SmsTemplate
from .selectors import templates_of

logger = logging.getLogger(__name__)

MAX_TEMPLATES_PER_ACCOUNT = 200
NAME_MAX_LENGTH = SmsTemplate._meta.get_field("name").max_length
# In a name: no control character at all. In a text: none but the line break, carriage return and
# tab, and never ESC (GSM-7 uses it as its escape) or a lone surrogate (PostgreSQL cannot store it).
_NAME_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_TEXT_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


class TemplateInvalid(Exception):
    """A template cannot be saved as given: messages by field ("name", "text", "non_field_errors")."""

    def __init__(self, errors: dict[str, list], code: str = "invalid"):
        super().__init__(code)
        self.errors, self.code = errors, code


def _clean_name(name) -> tuple[str, list]:
    if not isinstance(name, str):
        return "", [_("Give the template a name.")]
    name = name.strip()
    if not name:
        return "", [_("Give the template a name.")]
    if len(name) > NAME_MAX_LENGTH:
        return name, [_("The name is longer than %(max)d characters.") % {"max": NAME_MAX_LENGTH}]
    if _NAME_FORBIDDEN.search(name):
        return name, [_("The name contains characters that cannot be used.")]
    return name, []


def _clean_text(text) -> tuple[str, list]:
    if not isinstance(text, str) or not text.strip():
        return "", [_("The text is empty.")]
    text = text.replace("\r\n", "\n").strip()  # a CR LF would cost two characters of the SMS
    if len(text) > settings.SMSGATE_MAX_TEXT_LENGTH:
        return text, [_("The text is longer than %(max)d characters.") % {"max": settings.SMSGATE_MAX_TEXT_LENGTH}]
    if _TEXT_FORBIDDEN.search(text):
        return text, [_("The text contains control characters that an SMS cannot carry.")]
    return text, [error.message for error in markers.validate(text)]


def _name_taken() -> TemplateInvalid:
    return TemplateInvalid({"name": [_("A template with this name already exists.")]})


def _name_in_use(*, account: Account, name: str, exclude_pk=None) -> bool:
    """Compared in Python: SQLite's LOWER() knows only ASCII, and an account has a few hundred names at most
    (PostgreSQL's unique index on LOWER(name) decides a race)."""
    names = templates_of(account=account).exclude(pk=exclude_pk).values_list("name", flat=True)
    return name.lower() in {other.lower() for other in names}


def template_create(*, account: Account, name, text, is_active: bool = True) -> SmsTemplate:
    name, name_errors = _clean_name(name)
    text, text_errors = _clean_text(text)
    errors = {key: value for key, value in (("name", name_errors), ("text", text_errors)) if value}
    if errors:
        raise TemplateInvalid(errors)
    with transaction.atomic():
        # The account's row lock serialises creations, so two at once cannot pass the cap together.
        Account.objects.select_for_update().filter(pk=account.pk).first()
        if templates_of(account=account).count() >= MAX_TEMPLATES_PER_ACCOUNT:
            raise TemplateInvalid({"non_field_errors": [
                _("An account can keep at most %(max)d templates; delete one first.")
                % {"max": MAX_TEMPLATES_PER_ACCOUNT}]}, code="too_many_templates")
        if _name_in_use(account=account, name=name):
            raise _name_taken()
        try:
            with transaction.atomic():
                template = SmsTemplate.objects.create(account=account, name=name, text=text, is_active=bool(is_active))
        except IntegrityError:  # the same name saved at the same moment by someone else
            raise _name_taken() from None
    logger.info("template created", extra={"account_id": account.pk, "template_id": template.pk})
    return template


def template_update(*, template: SmsTemplate, name=None, text=None, is_active: bool | None = None) -> SmsTemplate:
    """Change what is given (None: keep)."""
    errors, changed = {}, []
    if name is not None:
        name, name_errors = _clean_name(name)
        if name_errors:
            errors["name"] = name_errors
        elif _name_in_use(account=template.account, name=name, exclude_pk=template.pk):
            errors["name"] = _name_taken().errors["name"]
        elif name != template.name:
            template.name = name
            changed.append("name")
    if text is not None:
        text, text_errors = _clean_text(text)
        if text_errors:
            errors["text"] = text_errors
        elif text != template.text:
            template.text = text
            changed.append("text")
    if is_active is not None and bool(is_active) != template.is_active:
        template.is_active = bool(is_active)
        changed.append("is_active")
    if errors:
        template.refresh_from_db()
        raise TemplateInvalid(errors)
    if changed:
        try:
            with transaction.atomic():
                template.save(update_fields=[*changed, "updated_at"])
        except IntegrityError:
            template.refresh_from_db()
            raise _name_taken() from None
        logger.info("template changed", extra={"template_id": template.pk, "fields": ",".join(changed)})
    return template


def template_delete(*, template: SmsTemplate) -> None:
    """Marks it deleted: it leaves every list and its name is free, while what names it still can."""
    SmsTemplate.objects.filter(pk=template.pk, deleted_at__isnull=True).update(deleted_at=timezone.now())
    logger.info("template deleted", extra={"template_id": template.pk})


# --- preview ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preview:
    text: str  # as it would be sent
    length: int  # characters
    encoding: str  # gsm7 | ucs2
    units: int  # septets or UTF-16 units
    parts: int  # SMS parts (deliveries.segments, the same counter as the sending path)
    missing: list[str]  # markers with no value, rendered empty
    errors: list[markers.MarkerError]  # invalid placeholders, left as written
    ucs2_from: list[str]  # markers whose values turned a GSM-7 template into UCS-2 (empty: they did not)
    too_long: bool  # longer than an SMS smsgate accepts (SMSGATE_MAX_TEXT_LENGTH)


def template_preview(*, text: str, context: Mapping[str, str | None]) -> Preview:
    """What `text` becomes with `context` (from `markers.context_for`): pure, no database."""
    rendered = markers.render(text, context)
    info = segment_info(rendered.text)
    ucs2_from = []
    if info.encoding == UCS2 and segment_info(markers.render(text, {}).text).encoding != UCS2:
        # The template's own text is GSM-7: the values did it.
        ucs2_from = [key for key, value in rendered.values.items() if segment_info(value).encoding == UCS2]
    return Preview(text=rendered.text, length=len(rendered.text), encoding=info.encoding, units=info.units,
                   parts=info.segments, missing=rendered.missing, errors=markers.validate(text), ucs2_from=ucs2_from,
                   too_long=len(rendered.text) > settings.SMSGATE_MAX_TEXT_LENGTH)
