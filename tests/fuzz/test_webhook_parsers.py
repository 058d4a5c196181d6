"""Hypothesis on every provider's delivery-report parser and signature check."""

import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from routes.providers import PROVIDERS
from routes.providers.base import ProviderError, ReportStatus, StatusReport, WebhookRequest, WebhookSignatureError
from routes.providers.smsru import SmsRuProvider
from routes.providers.twilio import TwilioProvider
from tests.fakes import twilio as fake_twilio

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CALLBACK_PROVIDERS = sorted(slug for slug, cls in PROVIDERS.items() if cls.supports_callbacks)
# What the webhook view turns into "400 unreadable report"; anything else would be a parser bug.
REFUSALS = (ProviderError, ValueError, TypeError, KeyError, UnicodeError, WebhookSignatureError)

field_names = st.sampled_from(["data[]", "data[0]", "hash", "MessageSid", "SmsSid", "MessageStatus", "SmsStatus",
                               "ErrorCode", "AccountSid", "id", "status", "phone", "err", "number", "messageId",
                               "state", "time", "ts", "RawDlrDoneDate"]) | st.text(max_size=12)
field_values = st.text(max_size=40) | st.integers(-10**20, 10**20).map(str) | st.sampled_from(
    ["sms_status\n000000-1\n103\n1700000000", "sms_status\n1\n999\n99999999999999999999", "delivered", "1", "-3"])
forms = st.dictionaries(field_names, st.lists(field_values, min_size=1, max_size=3), max_size=8)
json_bodies = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(field_names, inner, max_size=5),
                           max_leaves=12)


def credentials_for(cls) -> dict:
    return {field.name: f"test-{field.name}" for field in cls.credential_fields}


def request(form=None, body=b"", headers=None, query=None, url="https://gate.example.com/webhooks/x/token/"):
    return WebhookRequest(url=url, method="POST", headers=headers or {},
                          body=body, form=form or {}, query=query or {})


@pytest.mark.parametrize("slug", CALLBACK_PROVIDERS)
@FUZZ
@given(form=forms, body=json_bodies, as_query=st.booleans())
def test_parsers_return_reports_or_refuse_cleanly(slug, form, body, as_query):
    provider = PROVIDERS[slug](credentials=credentials_for(PROVIDERS[slug]))
    raw = json.dumps(body).encode()
    hook = request(form={} if as_query else form, body=raw, query=form if as_query else {},
                   headers={"content-type": "application/json"} if body is not None else {})
    try:
        reports = provider.parse_webhook(hook)
    except REFUSALS:
        return
    assert isinstance(reports, list)
    for report in reports:
        assert isinstance(report, StatusReport) and isinstance(report.provider_message_id, str)
        assert report.status in ReportStatus.__members__.values()


@FUZZ
@given(records=st.lists(st.tuples(st.from_regex(r"\A\d{6}-\d{1,8}\Z"), st.sampled_from(sorted(SmsRuProvider.status_map)),
                                  st.integers(0, 4_000_000_000)), min_size=1, max_size=5),
       api_id=st.text(alphabet="0123456789abcdef-", min_size=8, max_size=36))
def test_smsru_signed_batches_verify_and_parse_in_order(records, api_id):
    import hashlib

    data = [f"sms_status\n{sms_id}\n{code}\n{ts}" for sms_id, code, ts in records]
    signature = hashlib.sha256((api_id + "".join(data)).encode()).hexdigest()
    provider = SmsRuProvider(credentials={"api_id": api_id})
    hook = request(form={"data[]": data, "hash": [signature]})
    provider.verify_webhook(hook)
    reports = provider.parse_webhook(hook)
    assert [(r.provider_message_id, r.provider_code) for r in reports] == [(i, c) for i, c, _ in records]
    assert all(r.status == SmsRuProvider.status_map[r.provider_code] for r in reports)
    tampered = request(form={"data[]": data[:-1] + [data[-1] + "0"], "hash": [signature]})
    with pytest.raises(WebhookSignatureError):
        provider.verify_webhook(tampered)


printable = st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=20)


@FUZZ
@given(params=st.dictionaries(printable, printable, min_size=1, max_size=6), token=printable,
       victim=st.integers(0, 5), extra=printable)
def test_twilio_signature_holds_exactly_for_the_signed_parameters(params, token, victim, extra):
    url = "https://gate.example.com/webhooks/twilio/abc/"
    form = {name: [value] for name, value in params.items()}
    provider = TwilioProvider(credentials={"account_sid": "AC" + "0" * 32, "auth_token": token})
    good = request(form=form, url=url, headers={"x-twilio-signature": fake_twilio.sign(token, url, params)})
    provider.verify_webhook(good)
    name = sorted(params)[victim % len(params)]
    assume(params[name] != extra)
    changed = {**form, name: [extra]}
    with pytest.raises(WebhookSignatureError):
        provider.verify_webhook(request(form=changed, url=url, headers=good.headers))
