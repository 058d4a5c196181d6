from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import SAFE_METHODS, BasePermission


class ActiveAccount(BasePermission):
    """A token of a disabled account (uninstalled, or disabled by staff) gets 403."""

    message = _("This amoCRM account is disabled in smsgate.")
    code = "account_disabled"

    def has_permission(self, request, view):
        user = request.user
        if user is None or not getattr(user, "is_authenticated", False):
            return False
        return user.account.is_active


class AdminWrites(BasePermission):
    """Anyone of the account may read; only an account administrator (`is_admin`) may change."""

    message = _("Only an amoCRM account administrator can change these settings.")
    code = "admin_required"

    def has_permission(self, request, view):
        if request.method in SAFE_METHODS:
            return True
        return bool(request.user and request.user.is_admin)
