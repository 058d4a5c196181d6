from django.core.management.base import BaseCommand, CommandError

from accounts.models import Integration
from accounts.integrations import integration_sync_from_settings
from accounts.tokens import issue_token


class Command(BaseCommand):
    help = "Print a valid amoCRM one-time token for the configured integration (for trials with curl)."

    def add_arguments(self, parser):
        parser.add_argument("--account-id", type=int, required=True)
        parser.add_argument("--subdomain", default=None, help="defaults to demo<account-id>")
        parser.add_argument("--domain", default="amocrm.ru", choices=["amocrm.ru", "amocrm.com", "kommo.com"])
        parser.add_argument("--ttl", type=int, default=1800, help="seconds, at most 3600")
        parser.add_argument("--admin", action="store_true", help="set is_admin (for account API writes)")
        parser.add_argument("--integration", default=None, help="client UUID of another integration")

    def handle(self, *args, **options):
        if not 0 < options["ttl"] <= 3600:
            raise CommandError("--ttl must be between 1 and 3600 seconds.")
        if options["integration"]:
            integration = Integration.objects.filter(client_uuid=options["integration"]).first()
        else:
            integration = integration_sync_from_settings()
        if integration is None:
            raise CommandError("No integration: set AMO_CLIENT_ID, AMO_CLIENT_SECRET and AMO_REDIRECT_URI.")
        token = issue_token(
            integration=integration,
            account_id=options["account_id"],
            subdomain=options["subdomain"] or f"demo{options['account_id']}",
            domain=options["domain"],
            ttl=options["ttl"],
            is_admin=options["admin"],
        )
        self.stdout.write(token)
