"""Abuse limits in two layers: the operator's ceilings per account (new, edited in the admin only)
and the account's own choices (the old AccountLimits table, renamed AccountOwnLimits, edited through
the account API, only ever tighter than the ceilings).

Existing rows keep their data but are CLAMPED: the account API could write them, so they are
treated as the account's own choices and brought within the deployment defaults (the settings
SMSGATE_LIMIT_* and SMSGATE_DEFAULT_COUNTRIES when this migration runs):

- a cap (SMS per phone or account per hour/day, distinct numbers per prefix) of 0 ("no limit")
  becomes empty (= the ceiling), one above the default becomes the default;
- a cooldown or prefix window of 0 becomes empty, one shorter than the default becomes the default;
- countries outside the default list of the account's domain zone are dropped (a "*" too); if none
  is left the field becomes empty (= the operator's list).

Where the default itself is 0 (no limit) or "*" (any country), the value is kept. Values staff had
set in the admin are clamped the same way: set them again as ceilings after the upgrade. No new
ceiling rows are written. Reversing keeps the clamped values (and drops the ceilings).

The renamed model's permissions keep their grants: `*_accountlimits` become `*_accountownlimits`.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

CAPS = {"phone_per_hour": "SMSGATE_LIMIT_PHONE_HOUR", "phone_per_day": "SMSGATE_LIMIT_PHONE_DAY",
        "account_per_hour": "SMSGATE_LIMIT_ACCOUNT_HOUR", "account_per_day": "SMSGATE_LIMIT_ACCOUNT_DAY",
        "prefix_distinct_max": "SMSGATE_LIMIT_PREFIX_DISTINCT"}
DURATIONS = {"phone_cooldown_seconds": "SMSGATE_LIMIT_PHONE_COOLDOWN",
             "prefix_window_seconds": "SMSGATE_LIMIT_PREFIX_WINDOW"}


def _clamp_cap(value, ceiling):
    if value is None or ceiling == 0:
        return value
    if value == 0:
        return None
    return min(value, ceiling)


def _clamp_duration(value, ceiling):
    if value is None:
        return None
    if value == 0:
        return None
    return max(value, ceiling)


def _clamp_countries(raw: str, default: str) -> str:
    raw = raw.strip()
    if not raw or default.strip() == "*":
        return raw
    allowed = {code.strip().upper() for code in default.replace(";", ",").split(",") if code.strip()}
    chosen = {code.strip().upper() for code in raw.replace(";", ",").split(",") if code.strip()}
    return ",".join(sorted(chosen & allowed))


def clamp_own_limits(apps, schema_editor):
    own_limits = apps.get_model("accounts", "AccountOwnLimits")
    for own in own_limits.objects.select_related("account").iterator():
        for name, setting in CAPS.items():
            setattr(own, name, _clamp_cap(getattr(own, name), getattr(settings, setting)))
        for name, setting in DURATIONS.items():
            setattr(own, name, _clamp_duration(getattr(own, name), getattr(settings, setting)))
        default = settings.SMSGATE_DEFAULT_COUNTRIES.get(own.account.domain, "*")
        own.allowed_countries = _clamp_countries(own.allowed_countries, default)
        own.save()


def _rename_permissions(apps, old: str, new: str, verbose_name: str):
    """Django renames the content type with the model, not its permissions' codenames."""
    content_type = apps.get_model("contenttypes", "ContentType").objects.filter(
        app_label="accounts", model="accountownlimits").first()
    if content_type is None:  # a new database: post_migrate creates the permissions
        return
    permissions = apps.get_model("auth", "Permission").objects.filter(content_type=content_type)
    for action in ("add", "change", "delete", "view"):
        permissions.filter(codename=f"{action}_{old}").update(codename=f"{action}_{new}",
                                                              name=f"Can {action} {verbose_name}")


def rename_permissions(apps, schema_editor):
    _rename_permissions(apps, "accountlimits", "accountownlimits", "account's own abuse limits")


def rename_permissions_back(apps, schema_editor):
    _rename_permissions(apps, "accountownlimits", "accountlimits", "abuse limits")


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RenameModel(old_name="AccountLimits", new_name="AccountOwnLimits"),
        migrations.AlterModelOptions(
            name="accountownlimits",
            options={"verbose_name": "account's own abuse limits", "verbose_name_plural": "account's own abuse limits"},
        ),
        migrations.AlterField(
            model_name="accountownlimits",
            name="account",
            field=models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name="own_limits",
                                       to="accounts.account", verbose_name="account"),
        ),
        migrations.AlterField(
            model_name="accountownlimits",
            name="allowed_countries",
            field=models.CharField(blank=True, help_text="ISO codes separated by commas, within the operator's list. "
                                   "Empty: the operator's list.", max_length=300, verbose_name="allowed countries"),
        ),
        migrations.AlterField(
            model_name="accountownlimits",
            name="prefix_distinct_max",
            field=models.PositiveIntegerField(blank=True, null=True, verbose_name="distinct numbers per prefix"),
        ),
        migrations.CreateModel(
            name="AccountCeilings",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("phone_cooldown_seconds", models.PositiveIntegerField(blank=True, null=True,
                                                                       verbose_name="cooldown per phone, s")),
                ("phone_per_hour", models.PositiveIntegerField(blank=True, null=True,
                                                               verbose_name="SMS per phone per hour")),
                ("phone_per_day", models.PositiveIntegerField(blank=True, null=True,
                                                              verbose_name="SMS per phone per day")),
                ("account_per_hour", models.PositiveIntegerField(blank=True, null=True,
                                                                 verbose_name="SMS per account per hour")),
                ("account_per_day", models.PositiveIntegerField(blank=True, null=True,
                                                                verbose_name="SMS per account per day")),
                ("prefix_distinct_max", models.PositiveIntegerField(
                    blank=True, null=True, verbose_name="distinct numbers per prefix",
                    help_text="How many different numbers sharing all but the last 4 digits may get SMS within the "
                              "window.")),
                ("prefix_window_seconds", models.PositiveIntegerField(blank=True, null=True,
                                                                      verbose_name="prefix window, s")),
                ("allowed_countries", models.CharField(
                    blank=True, max_length=300, verbose_name="allowed countries",
                    help_text="ISO codes separated by commas (RU,KZ,BY), or * for any country. Empty: the country of "
                              "the account's domain zone (Russia for amocrm.ru).")),
                ("allowed_calling_codes", models.CharField(
                    blank=True, max_length=100, verbose_name="allowed non-geographic calling codes",
                    help_text="Non-geographic calling codes (satellite and international services such as +870, "
                              "+881, +882, +883) this account may send to, separated by commas. Empty: none, every "
                              "such number is refused as a pumping target.")),
                ("updated_at", models.DateTimeField(auto_now=True, verbose_name="updated")),
                ("account", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE,
                                                 related_name="limit_ceilings", to="accounts.account",
                                                 verbose_name="account")),
            ],
            options={"verbose_name": "abuse limit ceilings", "verbose_name_plural": "abuse limit ceilings"},
        ),
        migrations.RunPython(clamp_own_limits, migrations.RunPython.noop),
        migrations.RunPython(rename_permissions, rename_permissions_back),
    ]
