"""API tokens in Django REST framework: who is calling, what the token may do, how often.

`Authorization: Bearer nexo_…` authenticates as the token's person (personal token) or as
a `TokenPrincipal` (CI token); `Bearer <GitHub Actions ID token>` as an `OidcPrincipal`.
Settings name these classes; views ask the token what it allows
through `nexo_portal.lib.api` (`requires_scope`, `require_service`).
"""

import json
import logging
import secrets
from functools import lru_cache

import redis
from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.core.cache import cache
from django.db.models.manager import EmptyManager
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from redis.exceptions import RedisError
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.throttling import SimpleRateThrottle

from . import oidc
from .lib import context
from .lib.oidc import looks_like_jwt
from .lib.scopes import token_of
from .models import ApiToken

logger = logging.getLogger(__name__)

KEYWORD = "Bearer"


class TokenPrincipal:
    """Who a CI token acts as: signed in, but not a person, with no groups and no permissions.

    The domain policy tells it apart by `is_ci_token`; audit events name it api-token:<name>.
    """

    is_ci_token = True
    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, token):
        self.token = token
        self.username = token.audit_name()
        self.groups = EmptyManager(Group)
        self.user_permissions = EmptyManager(Permission)

    def __str__(self):
        return self.username

    def __eq__(self, other):
        return isinstance(other, TokenPrincipal) and other.token.pk == self.token.pk

    def __hash__(self):
        return hash(("api-token", self.token.pk))

    def get_username(self):
        return self.username

    def audit_name(self):
        return self.username

    def has_perm(self, perm, obj=None):
        return False

    def has_perms(self, perm_list, obj=None):
        return False

    def has_module_perms(self, app_label):
        return False

    def get_all_permissions(self, obj=None):
        return set()


class OidcPrincipal(TokenPrincipal):
    """A GitHub Actions run trusted by its ID token (nexo_portal.oidc): a CI token that never approves."""

    def audit_context(self):
        """Added to every audit event the run causes (audit.log.record): the claims that were trusted."""
        return {"oidc": self.token.trusted_claims()}


class ApiTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer <token>`. Another scheme is refused saying so, unless the person is signed
    in: a proxy in front of the portal may add its own `Authorization: Basic` to the session's calls."""

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts:
            return None
        if parts[0].lower() != KEYWORD.lower().encode():
            user = getattr(request._request, "user", None)  # the session's, read as SessionAuthentication does
            if user is not None and user.is_authenticated:
                return None
            scheme = parts[0][:20].decode("ascii", "replace")
            raise exceptions.AuthenticationFailed(
                f"Unknown Authorization scheme: send it as `Authorization: Bearer <token>`, not `{scheme} …`."
            )
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: send exactly `Authorization: Bearer <token>`."
            )
        try:
            plain_token = parts[1].decode("ascii")
        except UnicodeDecodeError as error:
            raise exceptions.AuthenticationFailed(
                "Invalid API token: it contains characters a token never has."
            ) from error
        if looks_like_jwt(plain_token):
            grant = oidc.trusted_grant(plain_token)
            context.bind(user=grant.name)
            # Every use, reads and repeated registrations included, which cause no audit event; the
            # events a run causes carry the same claims (OidcPrincipal).
            logger.info(
                "GitHub Actions ID token trusted for %s %s: %s",
                request.method,
                request.path,
                json.dumps(grant.trusted_claims(), sort_keys=True),
            )
            return OidcPrincipal(grant), grant
        token = ApiToken.objects.find(plain_token)
        if token is None:
            raise exceptions.AuthenticationFailed(
                "Invalid API token: no such token. Check the secret your pipeline sends."
            )
        reason = token.unusable_reason()
        if reason:
            raise exceptions.AuthenticationFailed(reason)
        token.mark_used()
        context.bind(user=token.user.get_username() if token.is_personal else f"token:{token.name}")
        return (token.user if token.is_personal else TokenPrincipal(token)), token

    def authenticate_header(self, request):
        # Also what turns "not authenticated" into 401 rather than 403, as this class comes first.
        return f'{KEYWORD} realm="api"'


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """Tells drf-spectacular how the token is sent, for the OpenAPI schema."""

    target_class = ApiTokenAuthentication
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(header_name="Authorization", token_prefix=KEYWORD)


class ApiTokenRateThrottle(SimpleRateThrottle):
    """Limits calls per token (API_TOKEN_THROTTLE_RATE); sessions are not throttled here.

    The token's calls of the last period are a Redis sorted set, pruned, counted and added to by
    one script: one round trip per call, and two workers cannot both take the last call left.
    DRF's own throttle reads the whole list of times and writes it back, two round trips that
    grow with the rate, and concurrent calls overwrite each other's.
    """

    scope = "api_token"

    # KEYS[1]: the token's set. ARGV: now, the period (seconds), the calls allowed, this call's member.
    # Answers whether the call may go, the calls in the period and the oldest one's time.
    COUNT_AND_TAKE = """
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1] - ARGV[2])
        local count = redis.call('ZCARD', KEYS[1])
        local allowed = count < tonumber(ARGV[3])
        if allowed then
            redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
            redis.call('EXPIRE', KEYS[1], ARGV[2])
            count = count + 1
        end
        local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
        return {allowed and 1 or 0, count, oldest or ARGV[1]}
    """

    def get_rate(self):
        # Read the setting on every request rather than DRF's import-time copy of it.
        return settings.API_TOKEN_THROTTLE_RATE

    def get_cache_key(self, request, view):
        token = token_of(request)
        if token is None:
            return None
        return cache.make_key(self.cache_format % {"scope": self.scope, "ident": token.pk})

    def allow_request(self, request, view):
        # The counters live in Redis. Without Redis, CI's calls still go through (registration
        # and promotions work, the reconciler enqueues what could not be): unthrottled, not refused.
        key = self.get_cache_key(request, view)
        if self.rate is None or key is None:
            return True
        self.now = self.timer()
        try:
            allowed, self.count, oldest = _count_and_take(
                keys=[key],
                args=[repr(self.now), self.duration, self.num_requests, f"{self.now!r}:{secrets.token_hex(4)}"],
            )
        except RedisError as error:
            logger.warning("API token throttle unavailable (%s); letting the call through", error)
            return True
        self.oldest = float(oldest)
        return bool(allowed)

    def wait(self):
        """Seconds until a call may go again, as DRF's throttle says it in Retry-After."""
        remaining = self.duration - (self.now - self.oldest)
        available = self.num_requests - self.count + 1
        return remaining / available if available > 0 else None


@lru_cache(maxsize=4)
def _count_and_take_at(location):
    # One client per process and cache location (tests point the cache elsewhere); the script is
    # sent once and then called by its hash.
    return redis.Redis.from_url(location).register_script(ApiTokenRateThrottle.COUNT_AND_TAKE)


def _count_and_take(**arguments):
    """Run the throttle's script on the cache's Redis, where the sign-in counters live too."""
    location = settings.CACHES["default"]["LOCATION"]
    return _count_and_take_at(location)(**arguments)
