from django.core.management.base import BaseCommand

from deliveries.retention import retention_run


class Command(BaseCommand):
    help = ("Apply the retention policy now: redact system SMS texts, purge old texts, hash old phones "
            "(the same job Celery beat runs hourly).")

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="only count what would change")
        parser.add_argument("--all-phones", action="store_true",
                            help="hash every phone past SMSGATE_HASH_PHONE_DAYS, not only the last days' "
                                 "(run once when phone hashing is switched on)")

    def handle(self, *args, dry_run=False, all_phones=False, **options):
        result = retention_run(dry_run=dry_run, all_phones=all_phones)
        verb = "would be" if dry_run else "were"
        self.stdout.write(f"{result.redacted} system SMS texts {verb} redacted")
        self.stdout.write(f"{result.purged} texts {verb} purged")
        self.stdout.write(f"{result.phones_hashed} phones {verb} hashed")
