"""Secrets are encrypted at rest and keys rotate."""

import io
import uuid

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from smsgate import crypto
from accounts.models import Integration
from routes.models import ProviderRoute
from tests.conftest import SECRET

pytestmark = pytest.mark.django_db


def raw_column(table, column, pk):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def test_integration_secret_is_not_stored_in_clear(integration):
    stored = raw_column("accounts_integration", "client_secret", integration.pk)
    assert SECRET not in stored
    assert Integration.objects.get(pk=integration.pk).client_secret == SECRET


def test_route_credentials_are_one_encrypted_blob(account):
    route = ProviderRoute.objects.create(account=account, provider="smsru", credentials={"api_id": "s3cr3t-key"})
    stored = raw_column("accounts_providerroute", "credentials", route.pk)
    assert "s3cr3t-key" not in stored and "api_id" not in stored
    assert ProviderRoute.objects.get(pk=route.pk).credentials == {"api_id": "s3cr3t-key"}


def test_key_rotation_keeps_old_rows_readable_and_reencrypts(settings):
    from accounts.models import Account

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.SMSGATE_ENCRYPTION_KEYS = [old]
    integration = Integration.objects.create(name="i", client_uuid=uuid.uuid4(), client_secret="s",
                                             redirect_uri="https://x.example.com/cb")
    account = Account.objects.create(integration=integration, amo_id=1, subdomain="a")
    route = ProviderRoute.objects.create(account=account, provider="smsru", credentials={"api_id": "k"})
    before = raw_column("accounts_providerroute", "credentials", route.pk)
    settings.SMSGATE_ENCRYPTION_KEYS = [new, old]
    assert ProviderRoute.objects.get(pk=route.pk).credentials == {"api_id": "k"}
    call_command("rotate_encryption_keys", stdout=io.StringIO())
    settings.SMSGATE_ENCRYPTION_KEYS = [new]
    assert ProviderRoute.objects.get(pk=route.pk).credentials == {"api_id": "k"}
    assert Integration.objects.get(pk=integration.pk).client_secret == "s"
    assert raw_column("accounts_providerroute", "credentials", route.pk) != before


def test_unknown_key_fails_loudly(settings, account):
    route = ProviderRoute.objects.create(account=account, provider="smsru", credentials={"api_id": "k"})
    settings.SMSGATE_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(crypto.DecryptionError):
        ProviderRoute.objects.get(pk=route.pk)
