"""What an API token allows, as views ask it: the scope a view needs and the services it may act on.

The token itself (nexo_portal.models.ApiToken) is found by the authentication class the settings
name; views only ask it through `has_scope()` and `allows_service()`.
"""

from rest_framework import exceptions
from rest_framework.permissions import BasePermission


def token_of(request):
    """The API token the request was authenticated with, or None for a session."""
    return request.auth if getattr(request.auth, "is_api_token", False) else None


def requires_scope(scope):
    """A permission class: tokens need `scope`; signed-in people pass, the domain policy judges them."""

    class RequiresScope(BasePermission):
        message = f"This API token lacks the '{scope}' scope; ask a platform engineer for a token that has it."

        def has_permission(self, request, view):
            token = token_of(request)
            if token is not None:
                return token.has_scope(scope)
            return bool(request.user and request.user.is_authenticated)

    RequiresScope.__name__ = RequiresScope.__qualname__ = f"RequiresScope_{scope}"
    return RequiresScope


def require_service(request, service):
    """Refuse (403) when the request's token is limited to other services than this one."""
    token = token_of(request)
    if token is not None and not token.allows_service(service):
        allowed = ", ".join(sorted(allowed.name for allowed in token.services.all()))
        raise exceptions.PermissionDenied(f"This API token may act on {allowed} only, not on {service.name}.")
