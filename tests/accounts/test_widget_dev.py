"""The development stand-in of amoCRM's card (accounts/widget_dev.py): only with DEBUG, and clear about
what is missing. Its pages in a browser, against the fake amoCRM: tests/browser/test_card_panel.py."""

import uuid

import jwt
import pytest
from django.urls import include, path

from accounts.models import Integration
from smsgate.urls import urlpatterns as smsgate_urls

urlpatterns = [*smsgate_urls, path("dev/amocrm/", include("accounts.widget_dev"))]

pytestmark = pytest.mark.urls(__name__)  # wired as smsgate/urls.py wires them when DEBUG is on
LOCAL = {"HTTP_HOST": "127.0.0.1:8000"}


@pytest.fixture
def dev(settings, db):
    settings.DEBUG = True
    settings.ALLOWED_HOSTS = ["127.0.0.1", "testserver"]
    settings.AMO_CLIENT_ID = str(uuid.uuid4())
    settings.AMO_CLIENT_SECRET = "dev-secret-" + "s" * 40
    settings.AMO_REDIRECT_URI = "http://127.0.0.1:8000/amocrm/oauth"
    return settings


def test_nothing_answers_without_debug(client, dev):
    dev.DEBUG = False
    for url in ("/dev/amocrm/", "/dev/amocrm/token", "/dev/amocrm/leads/detail/1", "/dev/amocrm/vendor/require.js",
                "/dev/amocrm/settings/widgets/",
                "/dev/amocrm/widget/script.js", "/dev/amocrm/data/cards.json", "/dev/amocrm/data/leads/1.json"):
        assert client.get(url, **LOCAL).status_code == 404, url


def test_the_token_is_signed_for_the_demo_account_as_amocrm_signs_it(client, dev):
    reply = client.get("/dev/amocrm/token", **LOCAL)
    assert reply.status_code == 200
    integration = Integration.objects.get(client_uuid=dev.AMO_CLIENT_ID)
    claims = jwt.decode(reply.content.decode(), dev.AMO_CLIENT_SECRET, algorithms=["HS256"],
                        audience=integration.audience)
    assert (claims["account_id"], claims["subdomain"], claims["is_admin"]) == (12345, "acme", True)
    assert claims["exp"] - claims["iat"] == 600


def test_the_page_and_the_widget_are_served(client, dev):
    page = client.get("/dev/amocrm/leads/detail/20000001", **LOCAL)
    assert page.status_code == 200 and b"amoCRM card (stand-in)" in page.content
    settings_page = client.get("/dev/amocrm/settings/widgets/", **LOCAL)
    assert settings_page.status_code == 200 and b"widget_settings_block" in settings_page.content
    script = client.get("/dev/amocrm/widget/script.js", **LOCAL)
    assert script.status_code == 200 and b"var BASE_URL = 'http://127.0.0.1:8000';" in script.content
    assert client.get("/dev/amocrm/widget/card.js", **LOCAL).status_code == 200
    assert client.get("/dev/amocrm/widget/i18n/en.json", **LOCAL).json()["card"]["send"] == "Send SMS"
    assert client.get("/dev/amocrm/widget/README.md", **LOCAL).status_code == 404  # not in the archive
    assert client.get("/dev/amocrm/widget/../settings.py", **LOCAL).status_code == 404
    assert client.get("/dev/amocrm/vendor/evil.js", **LOCAL).status_code == 404


def test_an_address_the_widget_cannot_be_built_for_is_explained(client, dev):
    reply = client.get("/dev/amocrm/widget/script.js", HTTP_HOST="testserver")
    assert reply.status_code == 503
    assert "open the page as http://127.0.0.1:8000" in reply.content.decode()


def test_without_an_installed_demo_account_it_says_what_to_run(client, dev):
    for url in ("/dev/amocrm/", "/dev/amocrm/data/cards.json", "/dev/amocrm/data/leads/20000001.json",
                "/dev/amocrm/data/leads/20000001/notes.json"):
        reply = client.get(url, **LOCAL)
        assert reply.status_code == 503, url
        assert "make fake-amocrm" in reply.content.decode(), url
