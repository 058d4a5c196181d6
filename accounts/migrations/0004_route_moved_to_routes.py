"""ProviderRoute now lives in the routes app (routes/migrations/0001_initial.py): it leaves this
app's state only; its table stays."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0003_account_amo_api_status"),
        ("routes", "0001_initial"),
        ("deliveries", "0002_route_moved_to_routes"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="ProviderRoute")],
            database_operations=[],
        ),
    ]
