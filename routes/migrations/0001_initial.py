"""ProviderRoute moves here from accounts: the model's state changes app, its table
(accounts_providerroute), rows and indexes stay as they are. Its content type moves too, so staff
permissions and admin history keep pointing at it."""

import django.db.models.deletion
from django.db import migrations, models

import routes.models
import smsgate.crypto


def move_content_type(apps, schema_editor, *, source="accounts", target="routes"):
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label=target, model="providerroute").exists():
        ContentType.objects.filter(app_label=source, model="providerroute").update(app_label=target)


def move_content_type_back(apps, schema_editor):
    move_content_type(apps, schema_editor, source="routes", target="accounts")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("accounts", "0003_account_amo_api_status"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ProviderRoute",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                                   verbose_name="ID")),
                        ("provider", models.CharField(max_length=30, verbose_name="provider")),
                        ("priority", models.PositiveSmallIntegerField(
                            default=10, help_text="Lower numbers are tried first.", verbose_name="priority")),
                        ("sender", models.CharField(blank=True, max_length=20, verbose_name="sender name")),
                        ("credentials", smsgate.crypto.EncryptedJSONField(default=dict, verbose_name="credentials")),
                        ("is_active", models.BooleanField(default=True, verbose_name="active")),
                        ("callback_token", models.CharField(default=routes.models.new_callback_token, editable=False, max_length=64,
                                                            unique=True, verbose_name="callback token")),
                        ("is_broken", models.BooleanField(default=False, verbose_name="broken")),
                        ("broken_reason", models.CharField(blank=True, max_length=200, verbose_name="why broken")),
                        ("broken_at", models.DateTimeField(blank=True, null=True, verbose_name="broken since")),
                        ("consecutive_failures", models.PositiveIntegerField(default=0,
                                                                             verbose_name="consecutive failures")),
                        ("created_at", models.DateTimeField(auto_now_add=True, verbose_name="created")),
                        ("updated_at", models.DateTimeField(auto_now=True, verbose_name="updated")),
                        ("account", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                                      related_name="routes", to="accounts.account",
                                                      verbose_name="account")),
                    ],
                    options={
                        "verbose_name": "provider route",
                        "verbose_name_plural": "provider routes",
                        "ordering": ["priority", "id"],
                        "db_table": "accounts_providerroute",
                        "indexes": [models.Index(fields=["account", "is_active", "priority"],
                                                 name="route_account_active_idx")],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_type, move_content_type_back),
    ]
