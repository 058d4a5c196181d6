from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import transaction

from smsgate.crypto import EncryptedTextField


def models_with_secrets():
    """Every model with an encrypted field, whichever app owns it (accounts, routes, ...)."""
    return [model for model in apps.get_models()
            if any(isinstance(field, EncryptedTextField) for field in model._meta.concrete_fields)]


class Command(BaseCommand):
    help = "Re-encrypt every stored secret with the first key of SMSGATE_ENCRYPTION_KEYS."

    def handle(self, *args, **options):
        count = 0
        with transaction.atomic():
            for model in models_with_secrets():
                for obj in model.objects.select_for_update().iterator():
                    obj.save()  # decrypts with any key, encrypts with the first
                    count += 1
        self.stdout.write(f"Re-encrypted {count} rows. Old keys can now be removed.")
