"""What an API token allows, as views ask it: the scope a view needs and the services it may act on.

The token itself (nexo_portal.models.ApiToken) is found by the authentication class the settings
name; views only ask it through `has_scope()`, `why_not_scope()`, `allows_service()` and `service_ids`.

A token limited to services reads only those services too: its lists leave the others out and a
detail of another service is refused. A session, or a token for all services (a personal one reads
what its person reads), sees every service. "All" is the token's `all_services` flag, never an empty
list: a token whose services were all deleted reads and acts on none.
"""

from rest_framework import exceptions
from rest_framework.permissions import BasePermission


def token_of(request):
    """The API token the request was authenticated with, or None for a session."""
    return request.auth if getattr(request.auth, "is_api_token", False) else None


def requires_scope(scope):
    """A permission class: tokens need `scope`; signed-in people pass, the domain policy judges them.

    A token without it says why in its own words (`why_not_scope`): an API token lacks it, a GitHub
    Actions run's trust policies do not give it, or can never give it."""

    class RequiresScope(BasePermission):
        def has_permission(self, request, view):
            token = token_of(request)
            if token is not None:
                if token.has_scope(scope):
                    return True
                self.message = token.why_not_scope(scope)  # an instance per request (APIView.get_permissions)
                return False
            return bool(request.user and request.user.is_authenticated)

    RequiresScope.__name__ = RequiresScope.__qualname__ = f"RequiresScope_{scope}"
    return RequiresScope


def require_service(request, service, scope=None):
    """Refuse (403) when the request's token is limited to other services than this one: to act with
    `scope`, or to read (None)."""
    token = token_of(request)
    if token is not None and not token.allows_service(service, scope):
        allowed = readable_service_names(request)
        # A GitHub Actions run is let in by trust policies, not by a token of its own.
        oidc = isinstance(token.pk, str) and token.pk.startswith("oidc:")
        what = f"The trust policies of {token.name.removeprefix('github-actions:')}" if oidc else "This API token"
        remedy = (
            "Ask a platform engineer to change the trust policy." if oidc else "Ask a platform engineer for a new one."
        )
        if not allowed:
            raise exceptions.PermissionDenied(
                f"{what} were limited to services that no longer exist: they allow none. {remedy}"
                if oidc
                else f"{what} was limited to services that no longer exist: it may act on none. {remedy}"
            )
        if service.name in allowed:
            # It may read the service, but no one policy gives both the service and this scope.
            raise exceptions.PermissionDenied(
                f"{what} may read {service.name} but not use the '{scope}' scope on it. {remedy}"
            )
        raise exceptions.PermissionDenied(f"{what} may act on {', '.join(allowed)} only, not on {service.name}.")


def readable_service_ids(request):
    """The ids of the services the request may read, or None for every service."""
    token = token_of(request)
    if token is None or token.all_services:
        return None
    return token.service_ids


def readable_service_names(request):
    """The names of the services the request may read, sorted, or None for every service."""
    token = token_of(request)
    if readable_service_ids(request) is None:
        return None
    return sorted(token.services.values_list("name", flat=True))


def only_readable(request, queryset, field="service"):
    """`queryset` less the rows about services the request's token may not read (`field` names the service)."""
    ids = readable_service_ids(request)
    return queryset if ids is None else queryset.filter(**{f"{field}__in": ids})
