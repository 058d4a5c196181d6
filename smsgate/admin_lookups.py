"""The admin's change lists answer only what their page offers: its own filters, its search and its
sortable columns.

Django's `ModelAdmin.lookup_allowed` lets any query-string parameter that names a local field
filter a change list with any lookup: `?text__startswith=Code%204` answers one row or none, so a
masked login code (or a phone, or `?password__startswith=pbkdf2` on users) is read one character
at a time, and `?text__contains=` or `?text__regex=` scan a table from a URL. Likewise `?o=`
sorts by any model field of `list_display`, `sortable_by` only hides the header links.

`StrictChangeListMixin` goes first in every ModelAdmin of the site (ours and Django's own user and
group admins, re-registered in `accounts/admin.py`; `tests/security/test_admin_lookups.py` walks
the registry). A parameter that is none of the admin's filter parameters gets Django's own
refusal, `DisallowedModelAdminLookup` (400), whoever asks. It lives in the project package, not in
an app, because every app's admin (and Django's) needs the same rule from one owner.
"""

from django.contrib.admin import FieldListFilter
from django.contrib.admin.utils import get_fields_from_path
from django.contrib.admin.views.main import ORDER_VAR, ChangeList
from django.contrib.admin.widgets import url_params_from_lookup_dict
from django.db.models import Field

_CACHE_SIZE = 16  # distinct list_filter tuples kept per admin (get_list_filter may vary per request)


def _never_empty(spec) -> bool:
    """A field filter's `<field>__isnull` can match nothing when the column cannot be NULL (and the
    filter offers no "empty" choice then), while PostgreSQL before 17 scans the whole table for it."""
    field = getattr(spec, "field", None)
    return field is not None and not getattr(field, "null", True) and not field.many_to_many


def filter_parameter_names(model_admin, request, list_filter) -> frozenset[str]:
    """The query-string parameters the admin's list filters read: each spec's
    `expected_parameters()`, the specs built as Django's ChangeList builds them (with no values),
    less `__isnull` on a column that is never NULL."""
    names = set()
    for item in list_filter:
        if callable(item):  # a ListFilter subclass, e.g. a SimpleListFilter
            spec = item(request, {}, model_admin.model, model_admin)
        else:
            field, filter_class = item if isinstance(item, (tuple, list)) else (item, FieldListFilter.create)
            field_path = None
            if not isinstance(field, Field):
                field_path = field
                field = get_fields_from_path(model_admin.model, field_path)[-1]
            spec = filter_class(field, request, {}, model_admin.model, model_admin, field_path=field_path)
        unused = f"{spec.field_path}__isnull" if _never_empty(spec) else None
        names.update(name for name in spec.expected_parameters() if name != unused)
    if model_admin.date_hierarchy:  # its drill-down links (year, month, day)
        names.update(f"{model_admin.date_hierarchy}__{part}" for part in ("year", "month", "day"))
    return frozenset(names)


class SortableOnlyChangeList(ChangeList):
    """`?o=` may sort by the columns of `sortable_by` only (Django's default: all of list_display)."""

    def get_ordering(self, request, queryset):
        if self.params.get(ORDER_VAR):
            kept = []
            for part in self.params[ORDER_VAR].split("."):
                try:
                    name = self.list_display[int(part.rpartition("-")[2])]
                except (IndexError, ValueError):
                    continue
                if name in self.sortable_by:
                    kept.append(part)
            # get_ordering_field_columns (the header's arrows) reads the same cleaned value.
            self.params = {**self.params, ORDER_VAR: ".".join(kept)}
        return super().get_ordering(request, queryset)


class StrictChangeListMixin:
    """Only the admin's own list filters may filter its change list (see the module docstring)."""

    def get_changelist(self, request, **kwargs):
        return SortableOnlyChangeList

    def lookup_allowed(self, lookup, value, request):
        if "\x00" in str(value):  # no column holds one; PostgreSQL would answer an error (a 500)
            return False
        if lookup not in self.allowed_filter_parameters(request) and not self._limit_choices_lookup(lookup, value):
            return False
        return super().lookup_allowed(lookup, value, request)  # and whatever the admin class refuses itself

    def _limit_choices_lookup(self, lookup, value) -> bool:
        """Django's raw-id popups pass a ForeignKey's limit_choices_to: exactly those pairs, fixed in code."""
        for fk_lookup in self.model._meta.related_fkey_lookups:
            if callable(fk_lookup):
                fk_lookup = fk_lookup()
            if (lookup, value) in url_params_from_lookup_dict(fk_lookup).items():
                return True
        return False

    def allowed_filter_parameters(self, request) -> frozenset[str]:
        list_filter = tuple(tuple(item) if isinstance(item, list) else item for item in self.get_list_filter(request))
        # Per admin instance; building the specs may query (related filters list their choices).
        cache = self.__dict__.setdefault("_filter_parameter_cache", {})
        names = cache.get(list_filter)
        if names is None:
            names = filter_parameter_names(self, request, list_filter)
            if len(cache) >= _CACHE_SIZE:
                cache.clear()
            cache[list_filter] = names
        return names
