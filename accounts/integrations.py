"""The deployment's own amoCRM integration, from AMO_CLIENT_ID, AMO_CLIENT_SECRET and AMO_REDIRECT_URI:
created (or updated) on first use, so a deployment works without adding it in the admin."""

import uuid

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .models import Integration


def is_settings_integration(client_uuid: uuid.UUID) -> bool:
    try:
        return bool(settings.AMO_CLIENT_SECRET) and uuid.UUID(settings.AMO_CLIENT_ID) == client_uuid
    except ValueError:
        return False


def integration_sync_from_settings() -> Integration | None:
    """Create or update the deployment's own integration from AMO_CLIENT_ID/SECRET/REDIRECT_URI."""
    if not settings.AMO_CLIENT_ID:
        return None
    if not (settings.AMO_CLIENT_SECRET and settings.AMO_REDIRECT_URI):
        raise ImproperlyConfigured("AMO_CLIENT_SECRET and AMO_REDIRECT_URI must be set with AMO_CLIENT_ID.")
    try:
        client_uuid = uuid.UUID(settings.AMO_CLIENT_ID)
    except ValueError as exc:
        raise ImproperlyConfigured("AMO_CLIENT_ID must be the integration's UUID.") from exc
    integration, created = Integration.objects.get_or_create(
        client_uuid=client_uuid,
        defaults={
            "name": "amoCRM (from environment)",
            "client_secret": settings.AMO_CLIENT_SECRET,
            "redirect_uri": settings.AMO_REDIRECT_URI,
        },
    )
    if not created and (
        integration.client_secret != settings.AMO_CLIENT_SECRET or integration.redirect_uri != settings.AMO_REDIRECT_URI
    ):
        integration.client_secret = settings.AMO_CLIENT_SECRET
        integration.redirect_uri = settings.AMO_REDIRECT_URI
        integration.save(update_fields=["client_secret", "redirect_uri", "updated_at"])
    return integration
