"""Create or update an account's SMS provider route and print it as JSON (never the secrets)."""

import json

from django.core.management.base import BaseCommand, CommandError

from accounts.models import Account
from routes.models import ProviderRoute
from routes.services import route_credentials_errors, route_save
from routes.providers import PROVIDERS
from routes.providers.base import ProviderError
from routes.services import RouteChoice, build_provider, route_callback_url


def _pairs(values: list[str]) -> dict:
    credentials = {}
    for pair in values:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CommandError(f"--credential expects name=value, got {pair.split('=')[0]!r}")
        credentials[name.strip()] = value
    return credentials


class Command(BaseCommand):
    help = ("Create or update a provider route of an amoCRM account and print its id and callback URL as JSON. "
            "Without --route, the account's only route of that provider is updated, or a new one is created.")

    def add_arguments(self, parser):
        parser.add_argument("--account-id", type=int, required=True, help="amoCRM account ID")
        parser.add_argument("--integration", default=None, help="integration client_id, if the account ID is ambiguous")
        parser.add_argument("--provider", required=True, choices=sorted(PROVIDERS))
        parser.add_argument("--priority", type=int, default=None, help="lower is tried first (default 10)")
        parser.add_argument("--sender", default=None, help="sender name / number")
        parser.add_argument("--credential", action="append", default=[], metavar="NAME=VALUE",
                            help="a credential of the provider; repeat for each")
        parser.add_argument("--route", type=int, default=None, help="update this route id")
        parser.add_argument("--new", action="store_true", help="always create a new route")
        parser.add_argument("--active", action="store_true", help="switch the route on (new routes are on)")
        parser.add_argument("--inactive", action="store_true", help="switch the route off")
        parser.add_argument("--register-callback", action="store_true",
                            help="also register the callback URL with the provider (SMS.ru)")

    def handle(self, *args, **options):
        account = self._account(options["account_id"], options["integration"])
        provider = options["provider"]
        route = self._route(account, provider, options["route"], options["new"])
        credentials = _pairs(options["credential"])
        errors = route_credentials_errors(provider=provider, credentials=credentials, route=route)
        if errors:
            raise CommandError("; ".join(errors))
        created = route is None
        route = route_save(account=account, provider=provider, credentials=credentials, route=route,
                           sender=options["sender"], priority=options["priority"],
                           is_active=False if options["inactive"] else (True if options["active"] or created else None))
        callback_url = route_callback_url(route)
        result = {
            "route_id": route.pk,
            "created": created,
            "account_id": account.amo_id,
            "provider": route.provider,
            "priority": route.priority,
            "sender": route.sender,
            "is_active": route.is_active,
            "is_broken": route.is_broken,
            "credentials": sorted(route.credentials),
            "callback_url": callback_url,
            "supports_callbacks": PROVIDERS[provider].supports_callbacks,
        }
        if options["register_callback"]:
            result["callback_registered"] = self._register(route, callback_url)
        self.stdout.write(json.dumps(result, ensure_ascii=False, indent=2))

    @staticmethod
    def _account(amo_id: int, integration: str | None) -> Account:
        accounts = Account.objects.filter(amo_id=amo_id)
        if integration:
            accounts = accounts.filter(integration__client_uuid=integration)
        found = list(accounts[:2])
        if not found:
            raise CommandError(f"no account with amoCRM ID {amo_id} (it registers on its first token)")
        if len(found) > 1:
            raise CommandError(f"amoCRM ID {amo_id} exists under several integrations: pass --integration")
        return found[0]

    @staticmethod
    def _route(account: Account, provider: str, route_id: int | None, new: bool) -> ProviderRoute | None:
        if route_id is not None:
            route = ProviderRoute.objects.filter(pk=route_id, account=account).first()
            if route is None:
                raise CommandError(f"route {route_id} does not belong to this account")
            return route
        if new:
            return None
        routes = list(ProviderRoute.objects.filter(account=account, provider=provider)[:2])
        if len(routes) > 1:
            raise CommandError(f"the account has several {provider} routes: pass --route ID or --new")
        return routes[0] if routes else None

    @staticmethod
    def _register(route: ProviderRoute, url: str):
        try:
            build_provider(RouteChoice(route, route.provider, route.credentials, route.sender)).register_callback(url)
        except NotImplementedError as exc:
            return {"ok": False, "detail": str(exc)}
        except ProviderError as exc:
            return {"ok": False, "error_class": str(exc.error_class), "code": exc.code, "detail": exc.message}
        return {"ok": True}
