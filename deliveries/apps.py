from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class DeliveriesConfig(AppConfig):
    name = "deliveries"
    verbose_name = _("SMS deliveries")

    def ready(self):
        from . import checks  # noqa: F401  (registers system checks)

        _let_psycopg_cache_long_statements()


# psycopg turns each query's %s placeholders into its own form (client-side binding, Django's
# default) and keeps the result for queries under 4,096 characters and 50 parameters. The send
# path's success batch and the counter recount are longer, so every execute parsed them again:
# 11-18 % of a bulk worker's interpreter time; with them cached, dispatch went from 250 to
# 276-291 SMS/s (bench/README.md). The cache is psycopg's own (an lru_cache of 128 statements by
# their text); only its size limits are raised. tests/deliveries/test_send.py checks it still works.
PSYCOPG_CACHED_STATEMENT_LENGTH = 32_768
PSYCOPG_CACHED_STATEMENT_PARAMS = 256


def _let_psycopg_cache_long_statements():
    try:
        from psycopg import _queries
    except ImportError:  # no PostgreSQL driver: nothing to tune
        return
    if hasattr(_queries, "MAX_CACHED_STATEMENT_LENGTH") and hasattr(_queries, "MAX_CACHED_STATEMENT_PARAMS"):
        _queries.MAX_CACHED_STATEMENT_LENGTH = max(_queries.MAX_CACHED_STATEMENT_LENGTH, PSYCOPG_CACHED_STATEMENT_LENGTH)
        _queries.MAX_CACHED_STATEMENT_PARAMS = max(_queries.MAX_CACHED_STATEMENT_PARAMS, PSYCOPG_CACHED_STATEMENT_PARAMS)
