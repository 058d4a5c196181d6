from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import Integration
from routes.models import ProviderRoute


class Command(BaseCommand):
    help = "Re-encrypt every stored secret with the first key of SMSGATE_ENCRYPTION_KEYS."

    def handle(self, *args, **options):
        count = 0
        with transaction.atomic():
            for model in (Integration, ProviderRoute):
                for obj in model.objects.select_for_update().iterator():
                    obj.save()  # decrypts with any key, encrypts with the first
                    count += 1
        self.stdout.write(f"Re-encrypted {count} rows. Old keys can now be removed.")
