"""/api/v1/pipeline/: the account's key for its pipeline actions (administrators only), the webhook URL,
refused calls counted where the owner sees them, the latest events that sent no SMS or no note, and
nothing of another account."""

import pytest

from crm.models import PipelineEvent, PipelineKey
from crm.pipeline_inbox import forget_pipeline_keys

pytestmark = pytest.mark.django_db

URL = "/api/v1/pipeline/"


@pytest.fixture(autouse=True)
def _fresh_keys():
    forget_pipeline_keys()
    yield
    forget_pipeline_keys()


def event(account, lead, state, reason="", detail="", at=1):
    return PipelineEvent.objects.create(account=account, lead_id=lead, status_id=40000002, event_type=15,
                                        event_time=at, state=state, reason=reason, detail=detail)


def test_an_admin_gets_the_key_made_on_first_look_and_the_same_one_after(api, account, settings):
    settings.SMSGATE_PUBLIC_URL = "https://sms.example.com"
    first = api.get(URL).json()
    assert len(first["key"]) >= 32 and first["webhook_url"] == "https://sms.example.com/amocrm/pipeline"
    assert (first["refused_calls"], first["refused_last_at"], first["attention"]) == (0, None, [])
    assert api.get(URL).json()["key"] == first["key"] == PipelineKey.objects.get(account=account).key


def test_a_user_who_is_not_an_admin_never_sees_the_key(api, viewer_api, account):
    assert viewer_api.get(URL).json()["key"] is None
    assert not PipelineKey.objects.exists()  # nor is one made for them
    api.get(URL)
    body = viewer_api.get(URL).json()
    assert body["key"] is None and body["webhook_url"].endswith("/amocrm/pipeline")
    response = viewer_api.post(URL + "key/")
    assert response.status_code == 403 and response.json()["code"] == "admin_required"


def test_an_admin_replaces_the_key(api, account):
    old = api.get(URL).json()["key"]
    new = api.post(URL + "key/").json()["key"]
    assert new != old and PipelineKey.objects.get(account=account).key == new


def test_refused_calls_and_the_events_that_need_attention_are_shown(api, client, account):
    key = api.get(URL).json()["key"]
    for _ in range(3):
        assert client.post("/amocrm/pipeline", {"account_id": "12345", "event[type]": "15"}).status_code == 403
    event(account, 1, "no_phone", "no_phone", "no contact of the lead has a phone that can get an SMS", at=1)
    event(account, 2, "sent", "unsorted", "amoCRM takes no notes on leads in unsorted", at=2)
    event(account, 3, "sent", at=3)  # fine: not listed
    event(account, 4, "pending", at=4)
    body = api.get(URL, HTTP_ACCEPT_LANGUAGE="en").json()
    assert body["key"] == key and body["refused_calls"] == 3 and body["refused_last_at"]
    assert [(e["lead_id"], e["state"], e["reason"]) for e in body["attention"]] == [
        (2, "sent", "unsorted"), (1, "no_phone", "no_phone")]
    assert body["attention"][1]["state_label"] == "no phone"
    assert body["counts"]["sent"] == 2 and body["counts"]["no_phone"] == 1 and body["counts"]["pending"] == 1
    assert body["counts"]["failed"] == 0


def test_another_accounts_events_and_key_are_out_of_reach(api, other_api, account, other_account):
    mine = api.get(URL).json()["key"]
    event(account, 1, "no_phone", "no_phone")
    theirs = other_api.get(URL).json()
    assert theirs["key"] != mine and theirs["attention"] == [] and theirs["counts"]["no_phone"] == 0


def test_without_a_token_the_api_answers_401(client):
    assert client.get(URL).status_code == 401
    assert client.post(URL + "key/").status_code == 401
