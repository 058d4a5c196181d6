"""Recompute the dashboard counters of a date range from the deliveries table (backfill after
seeding or an import, or a repair). Safe while traffic flows; one short transaction per day."""

import time
from datetime import date, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from deliveries.counters import stats_rebuild


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CommandError(f"not a date (YYYY-MM-DD): {text!r}") from None


class Command(BaseCommand):
    help = "Rebuild the daily dashboard counters (and hourly volumes) for a date range from the deliveries."

    def add_arguments(self, parser):
        parser.add_argument("--since", help="first day, YYYY-MM-DD (default: --days before today)")
        parser.add_argument("--until", help="last day, YYYY-MM-DD (default: today)")
        parser.add_argument("--days", type=int, default=35, help="with no --since: this many days back")

    def handle(self, *args, **options):
        until = _date(options["until"]) if options["until"] else timezone.localdate()
        since = _date(options["since"]) if options["since"] else until - timedelta(days=options["days"])
        if since > until:
            raise CommandError("--since is after --until")
        started = time.monotonic()

        def progress(day, corrected):
            if options["verbosity"] > 1:
                self.stdout.write(f"  {day}: {corrected} keys corrected")

        result = stats_rebuild(since=since, until=until, progress=progress)
        self.stdout.write(self.style.SUCCESS(
            f"Rebuilt {result.days} days ({since} to {until}): {result.deliveries} deliveries counted, "
            f"{result.keys_corrected} keys corrected, in {time.monotonic() - started:.1f} s."))
