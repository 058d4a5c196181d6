from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.widget_archive import WidgetError, widget_build, widget_check


class Command(BaseCommand):
    help = ("Build widget.zip for upload to amoCRM: fill in this deployment's URLs and check the archive "
            "as amoCRM does. Exits non-zero, listing every problem, when amoCRM would refuse it.")

    def add_arguments(self, parser):
        parser.add_argument("--base-url", help="public https URL of this deployment, e.g. https://sms.example.com")
        parser.add_argument("--out", default="widget.zip", help="where to write the archive (default widget.zip)")
        parser.add_argument("--source", default=str(Path(settings.BASE_DIR) / "widget_src"),
                            help="the widget's source folder (default widget_src/)")
        parser.add_argument("--support-email", default="",
                            help="support address shown in amoCRM (default SMSGATE_SUPPORT_EMAIL, else "
                                 "support@<host of --base-url>)")
        # Not --version: every management command already has that one (Django's own version).
        parser.add_argument("--widget-version",
                            help="widget.version (default: the build date and a hash of the archive's files, "
                                 "e.g. 2025.12.3-1a2b3c4d); amoCRM caches the widget's files by it")
        parser.add_argument("--check", metavar="ZIP", help="only check an existing archive")

    def handle(self, *args, **options):
        if options["check"]:
            try:
                problems = widget_check(Path(options["check"]).read_bytes())
            except OSError as exc:
                raise CommandError(f"cannot read {options['check']}: {exc}") from None
            self._fail_on(problems)
            self.stdout.write(f"{options['check']}: amoCRM would accept it.")
            return
        if not options["base_url"]:
            raise CommandError("--base-url is required, e.g. --base-url https://sms.example.com")
        source = Path(options["source"])
        if not (source / "manifest.json").is_file():
            raise CommandError(f"{source} has no manifest.json")
        support = (options["support_email"] or settings.SMSGATE_SUPPORT_EMAIL
                   or f"support@{urlsplit(options['base_url']).hostname or 'localhost'}")
        try:
            result = widget_build(source=source, base_url=options["base_url"], support_email=support,
                                  version=options["widget_version"])
        except WidgetError as exc:
            self._fail_on(exc.problems)
        out = Path(options["out"])
        out.write_bytes(result.archive)
        base = options["base_url"].rstrip("/")
        self.stdout.write(f"{out}: {len(result.files)} files, {len(result.archive) // 1024} KB; "
                          f"version {result.version}; sms.endpoint = {base}/amocrm/sms; support.link = {base}/help/")

    def _fail_on(self, problems):
        if problems:
            raise CommandError("amoCRM would refuse this widget:\n  - " + "\n  - ".join(problems))
