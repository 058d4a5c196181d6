"""Hypothesis on the digital pipeline's webhook (POST /amocrm/pipeline, issue 16): JSON nested far deeper than
the webhook, other scripts' digits and huge integers in every number it reads (with the right key, in both
encodings), multipart bodies with file parts, and arbitrary JSON and form shapes. Each asserts: never a 5xx;
a 4xx is the JSON error {"detail", "code"}; an event is recorded only with a 200 "accepted"."""

import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from crm.models import PipelineEvent
from crm.pipeline_inbox import forget_pipeline_keys, pipeline_key_get_or_create
from tests.fakes.amocrm.outgoing import dp_webhook_body, encode, php_form
from tests.fuzz.test_hostile_endpoints import FUZZ, assert_json_4xx, deep_json, huge_numbers, multipart, other_digits

pytestmark = pytest.mark.django_db

URL = "/amocrm/pipeline"
NUMBER_FIELDS = {"lead": ("event", "data", "id"), "stage": ("event", "data", "status_id"),
                 "pipeline": ("event", "data", "pipeline_id"), "type": ("event", "type"),
                 "element": ("event", "data", "element_type"), "time": ("event", "time"),
                 "account": ("account_id",), "template": ("action", "settings", "widget", "settings", "template_id")}


@pytest.fixture
def client(client):
    client.raise_request_exception = False  # a 500 is an answer to check, not an exception
    return client


@pytest.fixture
def key(account):
    forget_pipeline_keys()
    yield pipeline_key_get_or_create(account=account).key
    forget_pipeline_keys()


def body_for(key: str) -> dict:
    return dp_webhook_body(account_id=12345, subdomain="acme", lead_id=20000001, status_id=40000002,
                           pipeline_id=7000001, event_type=15, settings={"key": key, "message": "Привет"},
                           element_type=2, direction="went_to_trigger", event_time=1764750000)


def answered(response) -> None:
    """A 200 with its status (an event exactly when "accepted"), or the JSON 4xx."""
    if response.status_code == 200:
        assert json.loads(response.content)["status"] in ("accepted", "duplicate", "ignored")
    else:
        assert_json_4xx(response)


@FUZZ
@given(body=deep_json())
@example(body="[" * 30_000)
def test_deep_json_is_a_400_and_records_nothing(client, key, body):
    assert_json_4xx(client.post(URL, body, content_type="application/json"))
    assert not PipelineEvent.objects.exists()


@FUZZ
@given(field=st.sampled_from(sorted(NUMBER_FIELDS)), value=other_digits | huge_numbers, as_json=st.booleans())
@example(field="lead", value="٢٠٠٠٠٠٠١", as_json=False)
@example(field="time", value="１７６４７５００００", as_json=True)
@example(field="account", value=2**64, as_json=True)
def test_numbers_in_other_digits_or_huge_never_reach_the_database(client, key, field, value, as_json):
    body = body_for(key)
    node = body
    *parents, last = NUMBER_FIELDS[field]
    for part in parents:
        node = node[part]
    node[last] = value if as_json else str(value)
    data, content_type = encode(body, "json" if as_json else "form")
    assert_json_4xx(client.generic("POST", URL, data, content_type=content_type))
    assert not PipelineEvent.objects.exists()


@FUZZ
@given(data=st.data())
def test_multipart_with_file_parts_is_a_400(client, key, data):
    flat = dict(pair.split("=", 1) for pair in php_form(body_for(key)).split("&"))
    body, content_type = data.draw(multipart(flat))
    assert_json_4xx(client.post(URL, body, content_type=content_type))
    assert not PipelineEvent.objects.exists()


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=20)


@FUZZ
@given(shape=st.dictionaries(st.sampled_from(["event", "action", "account_id", "subdomain", "leads"]), json_values,
                             max_size=5), with_key=st.booleans())
def test_any_json_shape_is_answered_without_a_5xx(client, key, shape, with_key):
    if with_key:
        action = shape.setdefault("action", {})
        if not isinstance(action, dict):
            shape["action"] = action = {}
        action["settings"] = {"widget": {"settings": {"key": key}}}
    response = client.post(URL, json.dumps(shape), content_type="application/json")
    answered(response)
    assert PipelineEvent.objects.count() <= (1 if response.status_code == 200 else 0)


@FUZZ
@given(raw=st.binary(max_size=3000), content_type=st.sampled_from(["application/x-www-form-urlencoded",
                                                                   "application/json", "text/plain"]))
def test_arbitrary_bytes_are_answered_without_a_5xx(client, key, raw, content_type):
    response = client.generic("POST", URL, raw, content_type=content_type)
    answered(response)
    assert not PipelineEvent.objects.exists()
