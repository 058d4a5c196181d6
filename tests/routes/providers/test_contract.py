"""Every registered provider keeps the contract (routes/providers/base.py)."""

import importlib

import pytest

from routes.providers import PROVIDERS, provider_class
from routes.providers.base import CredentialField, Provider, ReportStatus
from tests.fakes.registry import FAKES

SLUGS = sorted(PROVIDERS)


def test_the_registry_holds_every_provider_of_the_issue():
    assert {"smsru", "smsc", "smsaero", "twilio", "devino", "console"} <= set(PROVIDERS)
    with pytest.raises(LookupError):
        provider_class("nope")


@pytest.mark.parametrize("slug", SLUGS)
def test_slug_is_the_module_and_the_registry_key(slug):
    cls = PROVIDERS[slug]
    assert issubclass(cls, Provider) and cls.slug == slug
    assert importlib.import_module(f"routes.providers.{slug}") is importlib.import_module(cls.__module__)
    assert slug.isidentifier() and slug == slug.lower() and len(slug) <= 30  # a URL segment and a DB value


@pytest.mark.parametrize("slug", SLUGS)
def test_name_and_credential_fields(slug):
    cls = PROVIDERS[slug]
    assert cls.name.strip()
    names = [f.name for f in cls.credential_fields]
    assert len(names) == len(set(names))
    for credential in cls.credential_fields:
        assert isinstance(credential, CredentialField) and credential.name.isidentifier()
        assert credential.label.get("ru") and credential.label.get("en")
        assert not credential.help or (credential.help.get("ru") and credential.help.get("en"))
    if slug != "console":
        assert any(f.secret for f in cls.credential_fields), "a real provider has a secret"
        assert cls.default_base_url.startswith("https://")


@pytest.mark.parametrize("slug", SLUGS)
def test_status_map_and_unknown_codes(slug):
    cls = PROVIDERS[slug]
    assert cls.status_map, "a provider declares how its statuses map"
    assert all(isinstance(code, str) and isinstance(status, ReportStatus) for code, status in cls.status_map.items())
    assert ReportStatus.DELIVERED in cls.status_map.values()
    for unknown in ("definitely-not-a-status", "", "987654", None):
        assert cls.map_status(unknown) == ReportStatus.UNKNOWN


@pytest.mark.parametrize("slug", SLUGS)
def test_a_way_to_learn_the_outcome(slug):
    cls = PROVIDERS[slug]
    assert cls.supports_callbacks or cls.supports_polling
    assert cls.poll_batch_size >= 1
    assert set(cls.webhook_methods) <= {"POST", "GET"}


@pytest.mark.parametrize("slug", sorted(set(SLUGS) - {"console"}))
def test_every_real_provider_has_a_fake_that_accepts_its_credential_names(slug):
    fake = FAKES[slug]()
    declared = {f.name for f in PROVIDERS[slug].credential_fields}
    assert set(fake.credentials) <= declared
    assert {f.name for f in PROVIDERS[slug].credential_fields if f.required} <= set(fake.credentials)
