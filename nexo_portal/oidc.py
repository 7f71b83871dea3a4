"""GitHub Actions call the API with their OIDC ID token, trusted through the admin's trust policies.

The token is accepted directly (`Authorization: Bearer <ID token>`), for as long as it is valid
(GitHub's last minutes): there is no portal secret to store or leak. Once verified
(nexo_portal.lib.oidc) its claims must meet a `TrustPolicy`; the run then acts like a CI token
limited to the policies' services and scopes (register, report), and every audit event it causes
carries the claims that were trusted.
"""

from django.conf import settings
from rest_framework import exceptions

from .lib import oidc
from .models import OIDC_SCOPES, TokenScope, TrustPolicy

# The claims kept in the audit log: who ran what, from where (GitHub's documented claims).
TRUSTED_CLAIMS = (
    "iss",
    "sub",
    "aud",
    "jti",
    "repository",
    "repository_id",
    "repository_owner",
    "ref",
    "ref_type",
    "sha",
    "workflow_ref",
    "job_workflow_ref",
    "environment",
    "event_name",
    "actor",
    "run_id",
    "run_attempt",
)


class ServiceUnavailable(exceptions.APIException):
    status_code = 503
    default_code = "unavailable"


class OidcGrant:
    """What a trusted GitHub Actions run may do, asked like an API token (`request.auth`)."""

    is_api_token = True
    is_personal = False
    all_services = False  # a trust policy names its services; none left means none
    user = None
    user_id = None

    def __init__(self, policies, claims):
        self.policies = policies
        self.claims = claims
        self.name = f"github-actions:{claims['repository']}"
        self.pk = f"oidc:{claims['repository']}"  # the throttle's key: one budget per repository
        creators = {policy.created_by_id for policy in policies}
        # Separation of duties: whoever wrote the trust answers for what it lets through.
        self.created_by_id = creators.pop() if len(creators) == 1 else None
        self.scope_list = sorted({scope for policy in policies for scope in policy.scope_list})
        self.service_ids = {service.pk for policy in policies for service in policy.services.all()}
        self.services = policies[0].services.model.objects.filter(pk__in=self.service_ids)

    def audit_name(self):
        return self.name

    def has_scope(self, scope):
        return scope in self.scope_list or scope == TokenScope.READ

    def why_not_scope(self, scope):
        """It has no token to ask more of: its trust policies give the scopes, and never more than OIDC_SCOPES."""
        repository = self.claims["repository"]
        if scope not in OIDC_SCOPES:
            return (
                f"A GitHub Actions run ({repository}, signed in with its OIDC token) may register builds and report "
                "results only: no trust policy can let it request, approve, reject, cancel or stop promotions, nor "
                f"roll back. Ask for the promotion on the board, or from a pipeline with an API token that has the "
                f"'{scope}' scope (a platform engineer creates it)."
            )
        return (
            f"The trust policies of {repository} do not give the '{scope}' scope; ask a platform engineer to add it "
            "to the trust policy."
        )

    def allows_service(self, service, scope=None):
        """To act (`scope`), one policy must allow both the scope and the service: policies do not
        combine into a grant none of them gives. To read, any of them."""
        if scope is None:
            return service.pk in self.service_ids
        return any(
            scope in policy.scope_list and any(allowed.pk == service.pk for allowed in policy.services.all())
            for policy in self.policies
        )

    def mark_used(self, now=None):
        return False

    def trusted_claims(self):
        return {
            **{name: self.claims[name] for name in TRUSTED_CLAIMS if name in self.claims},
            "trust_policies": [policy.name for policy in self.policies],
        }


def issuer_settings():
    return oidc.IssuerSettings(
        issuer=settings.OIDC_ISSUER,
        audience=settings.OIDC_AUDIENCE,
        leeway_seconds=settings.OIDC_LEEWAY_SECONDS,
        cache_seconds=settings.OIDC_JWKS_CACHE_SECONDS,
        refresh_cooldown_seconds=settings.OIDC_JWKS_REFRESH_COOLDOWN_SECONDS,
    )


def trusted_grant(id_token):
    """What a verified, trusted ID token may do; 401 with the reason otherwise (503: issuer out of reach)."""
    if not settings.OIDC_AUDIENCE:
        raise exceptions.AuthenticationFailed(
            "This portal does not accept OIDC ID tokens (OIDC_AUDIENCE is not set); use an API token."
        )
    try:
        claims = oidc.verifier_for(issuer_settings()).verify(id_token)
    except oidc.IdTokenRefused as error:
        raise exceptions.AuthenticationFailed(str(error)) from error
    except oidc.IssuerUnavailable as error:
        raise ServiceUnavailable(f"{error} Try again in a moment.") from error
    policies = TrustPolicy.objects.trusting(claims)
    if not policies:
        raise exceptions.AuthenticationFailed(TrustPolicy.objects.why_none_trusts(claims))
    return OidcGrant(policies, claims)
