"""Ask the provider of a route for its balance: a quick check of the credentials. Prints JSON."""

import json

from django.core.management.base import BaseCommand, CommandError

from routes.models import ProviderRoute
from routes.providers.base import ProviderError
from routes.services import route_balance, route_callback_url


class Command(BaseCommand):
    help = "Call the provider's balance API with a route's credentials and print the result as JSON."

    def add_arguments(self, parser):
        parser.add_argument("--route", type=int, required=True, help="route id (route_set prints it)")

    def handle(self, *args, **options):
        route = ProviderRoute.objects.filter(pk=options["route"]).first()
        if route is None:
            raise CommandError(f"no route {options['route']}")
        result = {"route_id": route.pk, "provider": route.provider, "is_active": route.is_active,
                  "is_broken": route.is_broken, "broken_reason": route.broken_reason,
                  "callback_url": route_callback_url(route)}
        try:
            balance = route_balance(route=route)
        except NotImplementedError as exc:
            result.update(ok=False, error_class="unsupported", detail=str(exc))
        except ProviderError as exc:
            result.update(ok=False, error_class=str(exc.error_class), code=exc.code, detail=exc.message)
        else:
            result.update(ok=True, balance=str(balance.amount), currency=balance.currency)
        self.stdout.write(json.dumps(result, ensure_ascii=False, indent=2))
        if not result["ok"]:
            raise CommandError(f"the provider refused: {result['error_class']}", returncode=2)
