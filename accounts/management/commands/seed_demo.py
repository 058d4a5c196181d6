from django.core.management.base import BaseCommand

from accounts.integrations import integration_sync_from_settings


class Command(BaseCommand):
    help = "Create the demo integration from AMO_* settings (idempotent). Accounts register on first token."

    def handle(self, *args, **options):
        integration = integration_sync_from_settings()
        if integration is None:
            self.stdout.write("AMO_CLIENT_ID is not set: no integration to seed.")
            return
        self.stdout.write(f"Integration {integration.client_uuid} ready (audience {integration.audience}).")
