import io
import uuid

import pytest
from django.core.management import CommandError, call_command

from accounts.tokens import verify_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def env_integration(settings):
    settings.AMO_CLIENT_ID = str(uuid.uuid4())
    settings.AMO_CLIENT_SECRET = "x" * 64
    settings.AMO_REDIRECT_URI = "http://127.0.0.1:8000/amocrm/oauth"


def test_amo_token_prints_a_token_the_verifier_accepts(env_integration):
    out = io.StringIO()
    call_command("amo_token", "--account-id", "42", "--subdomain", "shop", "--ttl", "600", stdout=out)
    claims = verify_token(out.getvalue().strip())
    assert (claims.account_id, claims.subdomain, claims.domain) == (42, "shop", "amocrm.ru")
    assert (claims.expires_at - claims.issued_at).total_seconds() == 600


def test_amo_token_refuses_a_lifetime_over_an_hour(env_integration):
    with pytest.raises(CommandError):
        call_command("amo_token", "--account-id", "42", "--ttl", "3601")


def test_amo_token_without_integration_explains(settings):
    settings.AMO_CLIENT_ID = ""
    with pytest.raises(CommandError, match="AMO_CLIENT_ID"):
        call_command("amo_token", "--account-id", "42")


def test_seed_demo_is_idempotent(env_integration):
    from accounts.models import Integration

    call_command("seed_demo", stdout=io.StringIO())
    call_command("seed_demo", stdout=io.StringIO())
    assert Integration.objects.count() == 1
