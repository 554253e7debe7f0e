from rest_framework.permissions import BasePermission

from accounts.authentication import AuthContext
from accounts.choices import Scope


class HasOrganization(BasePermission):
    """Authenticated, acting for an organization."""

    def has_permission(self, request, view):
        return isinstance(request.auth, AuthContext)


class _HasScope(HasOrganization):
    scope: str = ""
    message = ""

    def has_permission(self, request, view):
        return super().has_permission(request, view) and self.scope in request.auth.scopes


class CanManage(_HasScope):
    scope = Scope.MANAGE
    message = "This API key lacks the 'manage' scope."


class CanPredict(_HasScope):
    scope = Scope.PREDICT
    message = "This API key lacks the 'predict' scope."
