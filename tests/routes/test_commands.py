"""Operator commands: route_set (create or update a route, print JSON) and route_check (balance)."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

from routes.models import ProviderRoute

pytestmark = pytest.mark.django_db


def run(command, *args) -> dict:
    out = io.StringIO()
    call_command(command, *args, stdout=out)
    return json.loads(out.getvalue())


def test_route_set_creates_a_route_and_prints_its_callback_url(account, settings):
    settings.SMSGATE_PUBLIC_URL = "https://smsgate.example.com"
    result = run("route_set", "--account-id", "12345", "--provider", "twilio", "--priority", "5",
                 "--sender", "+15005550006", "--credential", "account_sid=AC123", "--credential", "auth_token=s3cret")
    route = ProviderRoute.objects.get(pk=result["route_id"])
    assert result == {
        "route_id": route.pk, "created": True, "account_id": 12345, "provider": "twilio", "priority": 5,
        "sender": "+15005550006", "is_active": True, "is_broken": False,
        "credentials": ["account_sid", "auth_token"],
        "callback_url": f"https://smsgate.example.com/webhooks/twilio/{route.callback_token}/",
        "supports_callbacks": True,
    }
    assert route.credentials == {"account_sid": "AC123", "auth_token": "s3cret"}


def test_route_set_updates_the_route_and_never_prints_secrets(account):
    first = run("route_set", "--account-id", "12345", "--provider", "smsru", "--credential", "api_id=old-key")
    out = io.StringIO()
    call_command("route_set", "--account-id", "12345", "--provider", "smsru", "--credential", "api_id=new-key",
                 "--priority", "3", stdout=out)
    second = json.loads(out.getvalue())
    assert second["route_id"] == first["route_id"] and second["created"] is False and second["priority"] == 3
    assert "new-key" not in out.getvalue()
    assert ProviderRoute.objects.get().credentials == {"api_id": "new-key"}


def test_route_set_refuses_unknown_and_missing_credentials(account):
    with pytest.raises(CommandError, match="'apikey' is not a credential of smsc"):
        run("route_set", "--account-id", "12345", "--provider", "smsc", "--credential", "apikey=x")
    with pytest.raises(CommandError, match="'password' is required"):
        run("route_set", "--account-id", "12345", "--provider", "smsc", "--credential", "login=me")
    assert not ProviderRoute.objects.exists()


def test_route_set_needs_a_known_account(db):
    with pytest.raises(CommandError, match="no account"):
        run("route_set", "--account-id", "999", "--provider", "smsru", "--credential", "api_id=x")


def test_route_set_can_add_a_second_route_of_the_same_provider(account):
    run("route_set", "--account-id", "12345", "--provider", "smsru", "--credential", "api_id=a")
    run("route_set", "--account-id", "12345", "--provider", "smsru", "--credential", "api_id=b", "--new",
        "--priority", "20")
    with pytest.raises(CommandError, match="several smsru routes"):
        run("route_set", "--account-id", "12345", "--provider", "smsru", "--priority", "1")


def test_route_set_registers_the_callback_at_smsru(account, start_fake, settings):
    settings.SMSGATE_PUBLIC_URL = "https://smsgate.example.com"
    fake = start_fake("smsru")
    result = run("route_set", "--account-id", "12345", "--provider", "smsru", "--credential", "api_id=test-api-id",
                 "--register-callback")
    assert result["callback_registered"] == {"ok": True}
    assert fake.callback_urls == [result["callback_url"]]


def test_route_check_prints_the_balance(account, start_fake, route_for):
    route = route_for(start_fake("smsc"))
    result = run("route_check", "--route", str(route.pk))
    assert (result["ok"], result["balance"], result["currency"], result["provider"]) == (True, "1234.50", "RUR", "smsc")


def test_route_check_reports_a_refusal_and_fails(account, start_fake, route_for):
    route = route_for(start_fake("devino"), credentials={"login": "test-login", "password": "wrong"})
    out = io.StringIO()
    with pytest.raises(CommandError, match="auth"):
        call_command("route_check", "--route", str(route.pk), stdout=out)
    result = json.loads(out.getvalue())
    assert (result["ok"], result["error_class"], result["code"]) == (False, "auth", "4")
    assert "wrong" not in out.getvalue()
