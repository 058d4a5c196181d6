"""The route foreign keys point at routes.ProviderRoute (the model moved from accounts; the table,
its rows and these columns' constraints are unchanged): state only."""

import django.db.models.deletion
from django.db import migrations, models


def _route(on_delete, related_name):
    return models.ForeignKey(blank=True, null=True, on_delete=on_delete, related_name=related_name,
                             to="routes.providerroute", verbose_name="route")


class Migration(migrations.Migration):

    dependencies = [
        ("deliveries", "0001_initial"),
        ("routes", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(model_name="delivery", name="route",
                                      field=_route(django.db.models.deletion.SET_NULL, "deliveries")),
                migrations.AlterField(model_name="attempt", name="route",
                                      field=_route(django.db.models.deletion.SET_NULL, "attempts")),
                migrations.AlterField(model_name="unmatchedreport", name="route",
                                      field=_route(django.db.models.deletion.CASCADE, "unmatched_reports")),
            ],
            database_operations=[],
        ),
    ]
