"""API tokens: how CI pipelines (and people, from scripts) call the portal's API; GitHub Actions'
trust policies; and the sessions of people signed in, each with whose it is.

Only a hash of each token is stored. The plain token is shown once, when it is created,
and cannot be recovered afterwards: a lost token is revoked and replaced.
"""

import hashlib
import secrets
from datetime import timedelta
from fnmatch import fnmatchcase

from django.conf import settings
from django.contrib.postgres.expressions import ArraySubquery
from django.contrib.sessions.base_session import AbstractBaseSession
from django.core.exceptions import ValidationError
from django.db import connection, models, transaction
from django.db.models import OuterRef, Q
from django.utils import timezone
from django.utils.functional import cached_property

from audit import log as audit
from audit.models import AuditAction
from environments.models import SLUG_PATTERN, slug_validator

TOKEN_PREFIX = "nexo_"
# Enough of the token to recognise it in a list (and in a leaked secret scan), far too
# little to help guess the remaining 250-odd random bits.
VISIBLE_PREFIX_LENGTH = len(TOKEN_PREFIX) + 6
# last_used_at is only as precise as this, so a busy pipeline does not add a database
# write to every API call.
LAST_USED_RESOLUTION = timedelta(minutes=1)
TOKEN_HASH_PATTERN = r"^[0-9a-f]{64}$"


class TokenScope(models.TextChoices):
    """What a token may do. Every token may also read, as GitHub's write permissions imply read:
    a pipeline that registers a build or requests a promotion follows the URL the answer gives it."""

    REGISTER = "register", "Register releases (and read)"
    PROMOTE = "promote", "Request, cancel and roll back promotions; approve with a personal token (and read)"
    REPORT = "report", "Report CI verification results (and read)"
    READ = "read", "Read only: releases, promotions, the matrix, the audit log and DORA"


# Shown wherever a token is created (the admin, manage.py create_api_token).
SCOPES_HELP = (
    "What the token may do. Every scope includes reading (releases, promotions, the matrix, the audit log, "
    "DORA); choose read alone for a read-only token."
)


class TokenStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    EXPIRED = "expired", "Expired"
    REVOKED = "revoked", "Revoked"


_ONE_SCOPE = "(" + "|".join(TokenScope.values) + ")"
# Scopes are stored as a space-separated list, the way OAuth 2.0 writes them (RFC 6749 §3.3).
SCOPES_PATTERN = rf"^{_ONE_SCOPE}( {_ONE_SCOPE})*$"


def hash_token(plain_token):
    """SHA-256 of the token.

    A fast, unkeyed hash is enough here: tokens carry 256 random bits, so there is nothing
    to brute-force or look up in a precomputed table (a slow password hash would only
    slow down every API call). Unkeyed also means rotating SECRET_KEY does not invalidate
    every CI pipeline's token.
    """
    return hashlib.sha256(plain_token.encode()).hexdigest()


def generate_token():
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class ApiTokenQuerySet(models.QuerySet):
    def find(self, plain_token):
        """The token with this secret, revoked or not, or None."""
        if not plain_token.startswith(TOKEN_PREFIX):
            return None
        tokens = self.select_related("user").filter(token_hash=hash_token(plain_token))
        if connection.vendor == "postgresql":
            # The services it is limited to, in the same query: every API call of CI asks.
            limits = ApiToken.services.through.objects.filter(apitoken=OuterRef("pk")).values("service_id")
            tokens = tokens.annotate(limited_to=ArraySubquery(limits))
        return tokens.first()

    def issue(self, *, name, scopes, services=(), all_services=False, user=None, expires_at=None, created_by=None):
        """Create a token and return it with its plain secret, which is never available again.

        It is for the `services` listed or, with `all_services`, for every one: never both, never neither.
        """
        services = list(services)
        with transaction.atomic():
            token = self.model(
                name=name,
                scopes=" ".join(dict.fromkeys(scopes)),
                all_services=all_services,
                user=user,
                expires_at=expires_at,
                created_by=created_by,
            )
            plain_token = token.set_secret()
            token.full_clean()
            token.validate_services(services)
            token.validate_issuer(created_by)
            token.save()
            token.services.set(services)
            token.record_creation()
        return token, plain_token


class ApiToken(models.Model):
    name = models.CharField(
        max_length=50,
        unique=True,
        validators=[slug_validator],
        help_text=(
            "Where it is used, e.g. github-actions-nexo-be; audit events then name it api-token:github-actions-nexo-be."
        ),
    )
    prefix = models.CharField(max_length=VISIBLE_PREFIX_LENGTH, editable=False, help_text="The start of the token.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.CharField(max_length=100, help_text="What the token may do.")
    # A flag rather than "no service selected": deleting a service takes it out of every token's
    # list, and a token limited to that one service must then act on none, not on all.
    all_services = models.BooleanField(
        default=False,
        help_text="It may act on and read every service, those added later too. Otherwise: the services selected.",
    )
    services = models.ManyToManyField(
        "releases.Service",
        blank=True,
        related_name="api_tokens",
        help_text=(
            "The services it may act on and read (releases, promotions, matrix, audit log, DORA), "
            "unless it is for all services."
        ),
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="api_tokens",
        help_text="For a personal token: the person it acts as. Empty for a CI token.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiTokenQuerySet.as_manager()

    # How views tell a token from a session's `request.auth` (nexo_portal.lib.api.token_of).
    is_api_token = True

    class Meta:
        verbose_name = "API token"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(name__regex=SLUG_PATTERN), name="api_token_name_is_slug"),
            models.CheckConstraint(condition=Q(scopes__regex=SCOPES_PATTERN), name="api_token_scopes_are_known"),
            models.CheckConstraint(condition=Q(token_hash__regex=TOKEN_HASH_PATTERN), name="api_token_hash_is_sha256"),
            models.CheckConstraint(
                condition=Q(expires_at__isnull=True) | Q(expires_at__gt=models.F("created_at")),
                name="api_token_expires_after_creation",
            ),
        ]

    def __str__(self):
        return self.name

    def audit_name(self):
        return f"api-token:{self.name}"

    @property
    def scope_list(self):
        return self.scopes.split()

    def has_scope(self, scope):
        return scope in self.scope_list or scope == TokenScope.READ

    def why_not_scope(self, scope):
        return f"This API token lacks the '{scope}' scope; ask a platform engineer for a token that has it."

    @cached_property
    def service_ids(self):
        """The services it is limited to (unless `all_services`), read once per request if `find()` did not.

        Empty when they were all deleted since: the token then acts on none."""
        if "limited_to" in self.__dict__:
            return set(self.limited_to)
        return set(self.services.values_list("pk", flat=True))

    def allows_service(self, service, scope=None):
        """Whether the token may act on this service; its scopes hold for each of its services alike,
        so `scope` changes nothing here."""
        return self.all_services or service.pk in self.service_ids

    def describe_services(self):
        """The services it may act on, in words, wherever the token is shown."""
        if self.all_services:
            return "all services"
        names = sorted(service.name for service in self.services.all())
        return ", ".join(names) or "none: it was limited to services that no longer exist (revoke it)"

    @property
    def is_personal(self):
        return self.user_id is not None

    def status(self, now=None):
        if self.revoked_at is not None:
            return TokenStatus.REVOKED
        if self.expires_at is not None and self.expires_at <= (now or timezone.now()):
            return TokenStatus.EXPIRED
        return TokenStatus.ACTIVE

    def get_status_display(self):
        return self.status().label

    def unusable_reason(self, now=None):
        """Why the token cannot be used right now, for the 401 answer; empty when it can."""
        status = self.status(now)
        # First: deactivating its person revokes it too, and the deactivation is what to ask about.
        if self.user is not None and not self.user.is_active:
            return "This personal API token belongs to a deactivated account."
        if status == TokenStatus.REVOKED:
            return (
                f"This API token was revoked on {self.revoked_at:%Y-%m-%d %H:%M} UTC; "
                "ask a platform engineer for a new one."
            )
        if status == TokenStatus.EXPIRED:
            return (
                f"This API token expired on {self.expires_at:%Y-%m-%d %H:%M} UTC; "
                "ask a platform engineer for a new one."
            )
        return ""

    def is_usable(self, now=None):
        return not self.unusable_reason(now)

    def set_secret(self):
        """Give a new token its secret; returns the plain token, which only the caller ever sees."""
        plain_token = generate_token()
        self.token_hash = hash_token(plain_token)
        self.prefix = plain_token[:VISIBLE_PREFIX_LENGTH]
        return plain_token

    def clean(self):
        unknown = [scope for scope in self.scope_list if scope not in TokenScope.values]
        if not self.scope_list:
            raise ValidationError({"scopes": "Choose at least one scope."})
        if unknown:
            raise ValidationError(
                {"scopes": f"Unknown scope(s): {', '.join(unknown)}. Known: {', '.join(TokenScope.values)}."}
            )
        if self.expires_at is not None and self.expires_at <= (self.created_at or timezone.now()):
            raise ValidationError({"expires_at": "The expiry date must be in the future."})

    def validate_services(self, services):
        """All services is said, never inferred from an empty list (which deleting services makes)."""
        if self.all_services and services:
            raise ValidationError({"services": "Choose either all services or some services, not both."})
        if not self.all_services and not services:
            raise ValidationError({"services": "Choose the services it may act on, or all services."})

    def validate_issuer(self, issuer):
        """A personal token acts as its person, so only they or a superuser may create it."""
        if self.user_id is None or issuer is None:
            return
        if issuer.pk != self.user_id and not issuer.is_superuser:
            raise ValidationError(
                {
                    "user": (
                        "Only a superuser may create a personal token for someone else; leave it empty for a CI token."
                    )
                }
            )

    def record_creation(self):
        """Write the audit event of a new token; call it in the transaction that saved the token and its services."""
        audit.record(
            AuditAction.TOKEN_CREATED,
            actor=self.created_by,
            message=f"API token {self.name} ({self.prefix}…) created with scopes {', '.join(self.scope_list)}",
            data=self._audit_data(),
        )

    def revoke(self, by, because=""):
        """Revoke the token for good; returns False when it already was revoked. `because`: why, when
        the portal revokes it on its own (its person deactivated)."""
        with transaction.atomic():
            current = ApiToken.objects.select_for_update().get(pk=self.pk)
            if current.revoked_at is not None:
                self.revoked_at = current.revoked_at
                return False
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])
            audit.record(
                AuditAction.TOKEN_REVOKED,
                actor=by,
                message=f"API token {self.name} ({self.prefix}…) revoked" + (f": {because}" if because else ""),
                data={**self._audit_data(), **({"because": because} if because else {})},
            )
        return True

    def mark_used(self, now=None):
        """Note that the token was used, writing at most once per LAST_USED_RESOLUTION."""
        now = now or timezone.now()
        if self.last_used_at is not None and now - self.last_used_at < LAST_USED_RESOLUTION:
            return False
        ApiToken.objects.filter(pk=self.pk).update(last_used_at=now)
        self.last_used_at = now
        return True

    def _audit_data(self):
        return {
            "token": self.name,
            "prefix": self.prefix,
            "scopes": self.scope_list,
            "all_services": self.all_services,
            "services": sorted(service.name for service in self.services.all()),
            "user": self.user.get_username() if self.user else None,
            "expires_at": self.expires_at,
        }


class RefType(models.TextChoices):
    ANY = "", "Branch or tag"
    BRANCH = "branch", "Branch"
    TAG = "tag", "Tag"


# What a GitHub Actions ID token may do: build registration and CI results, never promotions or approvals.
OIDC_SCOPES = [TokenScope.REGISTER, TokenScope.REPORT]
_ONE_OIDC_SCOPE = "(" + "|".join(OIDC_SCOPES) + ")"
OIDC_SCOPES_PATTERN = rf"^{_ONE_OIDC_SCOPE}( {_ONE_OIDC_SCOPE})*$"
REPOSITORY_PATTERN = r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"


def _lines(text):
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


_WHAT_A_SCOPE_LETS_DO = {TokenScope.REGISTER: "register builds", TokenScope.REPORT: "report CI results"}
# A character Git allows in no ref or file name (DEL): a pattern that matches a name holding it matches
# names nobody listed, i.e. every branch (or workflow file) at that place.
_IN_NO_NAME = "\x7f"


class TrustPolicyQuerySet(models.QuerySet):
    def trusting(self, claims):
        """The active policies whose every condition the (verified) claims meet."""
        candidates = self.filter(is_active=True, repository=claims.get("repository", "")).prefetch_related("services")
        return [policy for policy in candidates if not policy.why_not_trusted(claims)]

    def why_none_trusts(self, claims):
        """Why no active policy trusts these claims: the reason of the policy that came closest."""
        repository = claims.get("repository", "")
        candidates = list(self.filter(is_active=True, repository=repository))
        if not candidates:
            return (
                f"No trust policy trusts the repository {repository or '(none)'}; a platform engineer adds one "
                "in the admin (GitHub Actions trust policies)."
            )
        return " ".join(policy.why_not_trusted(claims) for policy in candidates)


class TrustPolicy(models.Model):
    """Which GitHub Actions runs may call the API without a stored secret, and what they may do.

    A run's OIDC ID token is trusted when it comes from the repository, a ref (and ref type) and a
    workflow listed here, and from the environment if one is set; it then may register builds
    and/or report CI results for the services selected. Never more: it cannot promote or approve.
    """

    name = models.CharField(max_length=50, unique=True, validators=[slug_validator])
    repository = models.CharField(
        max_length=140, help_text="The `repository` claim, exactly: owner/name, e.g. nexo-org/nexo-be."
    )
    repository_id = models.CharField(
        max_length=20,
        blank=True,
        help_text="The `repository_id` claim (GitHub's numeric id of the repository), to pin it: set, a repository "
        "renamed or deleted and then re-created under this name by someone else is not trusted.",
    )
    refs = models.TextField(
        help_text=("The `ref` claims allowed, one per line; * matches anything, e.g. refs/heads/main or refs/tags/v*.")
    )
    ref_type = models.CharField(
        max_length=10, choices=RefType.choices, blank=True, help_text="The `ref_type` claim required."
    )
    workflows = models.TextField(
        help_text=(
            "The workflows allowed, one per line, as in the `job_workflow_ref` or `workflow_ref` claim: "
            "owner/name/.github/workflows/build.yml@refs/heads/main (* matches anything)."
        )
    )
    environment = models.CharField(
        max_length=255,
        blank=True,
        help_text="The GitHub deployment environment the job must run in (`environment` claim); empty: any or none.",
    )
    services = models.ManyToManyField(
        "releases.Service", related_name="trust_policies", help_text="The services such a run may act on and read."
    )
    scopes = models.CharField(max_length=30, help_text="register and/or report; never promote or approve.")
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = TrustPolicyQuerySet.as_manager()

    class Meta:
        verbose_name = "GitHub Actions trust policy"
        verbose_name_plural = "GitHub Actions trust policies"
        ordering = ["repository", "name"]
        constraints = [
            models.CheckConstraint(condition=Q(name__regex=SLUG_PATTERN), name="trust_policy_name_is_slug"),
            models.CheckConstraint(
                condition=Q(scopes__regex=OIDC_SCOPES_PATTERN), name="trust_policy_scopes_register_or_report"
            ),
            models.CheckConstraint(
                condition=Q(repository__regex=REPOSITORY_PATTERN), name="trust_policy_repository_is_owner_name"
            ),
        ]

    def __str__(self):
        return self.name

    @property
    def scope_list(self):
        return self.scopes.split()

    @property
    def ref_list(self):
        return _lines(self.refs)

    @property
    def workflow_list(self):
        return _lines(self.workflows)

    def clean(self):
        errors = {}
        unknown = [scope for scope in self.scope_list if scope not in OIDC_SCOPES]
        if not self.scope_list or unknown:
            errors["scopes"] = "Choose register and/or report: a GitHub Actions run never promotes or approves."
        if self.repository_id and not (self.repository_id.isascii() and self.repository_id.isdigit()):
            errors["repository_id"] = "GitHub's repository id is a number, e.g. 74 (the repository_id claim)."
        if not self.ref_list:
            errors["refs"] = "List at least one ref, e.g. refs/heads/main."
        if not self.workflow_list:
            errors["workflows"] = "List at least one workflow, e.g. nexo-org/nexo-be/.github/workflows/build.yml@*."
        if errors:
            raise ValidationError(errors)

    def breadth_warnings(self):
        """What the policy lets through that a platform engineer may not mean to, one sentence each: every
        branch (anyone who may push one runs workflows there) or every workflow, not the one that builds.

        Warnings, not refusals: a repository whose every branch is protected may mean it."""
        services = ", ".join(service.name for service in self.services.all()) or "its services"
        done = [_WHAT_A_SCOPE_LETS_DO[scope] for scope in self.scope_list if scope in _WHAT_A_SCOPE_LETS_DO]
        allows = f"{' and '.join(done) or 'act'} of {services}"
        warnings = []
        if every_branch := [ref for ref in self.ref_list if fnmatchcase(f"refs/heads/{_IN_NO_NAME}", ref)]:
            warnings.append(
                f"{self.name} trusts every branch ({', '.join(every_branch)}): a workflow run on any branch of "
                f"{self.repository}, which anyone who may push to it can create, can {allows}. List the refs you "
                "release from, e.g. refs/heads/main."
            )
        # The file's part of the pattern (before @ref), whatever the ref: `*.yml@refs/heads/main` is every workflow.
        any_file = f"{self.repository}/.github/workflows/{_IN_NO_NAME}.yml"
        if every_workflow := [
            workflow
            for workflow in self.workflow_list
            if fnmatchcase(any_file, workflow.rpartition("@")[0] or workflow)
        ]:
            warnings.append(
                f"{self.name} trusts every workflow ({', '.join(every_workflow)}): any workflow run in "
                f"{self.repository}, not only the one that builds, can {allows}. List the workflows that build, e.g. "
                f"{self.repository}/.github/workflows/build.yml@refs/heads/main."
            )
        return warnings

    def why_not_trusted(self, claims):
        """Why this policy does not trust the claims, in one sentence; empty when it does."""
        if claims.get("repository") != self.repository:
            return f"Policy {self.name} trusts {self.repository} only."
        if self.repository_id and str(claims.get("repository_id", "")) != self.repository_id:
            return (
                f"Policy {self.name} trusts {self.repository} with the repository id {self.repository_id} only, not "
                f"{claims.get('repository_id') or '(none)'}: was the repository renamed or re-created?"
            )
        ref = claims.get("ref", "")
        if not any(fnmatchcase(ref, pattern) for pattern in self.ref_list):
            return f"Policy {self.name} does not allow the ref {ref or '(none)'} (allowed: {', '.join(self.ref_list)})."
        if self.ref_type and claims.get("ref_type") != self.ref_type:
            return (
                f"Policy {self.name} allows a {self.get_ref_type_display().lower()} only, "
                f"not a {claims.get('ref_type') or '(none)'}."
            )
        workflows = [claims.get("job_workflow_ref", ""), claims.get("workflow_ref", "")]
        if not any(
            workflow and fnmatchcase(workflow, pattern) for workflow in workflows for pattern in self.workflow_list
        ):
            return (
                f"Policy {self.name} does not allow the workflow {claims.get('job_workflow_ref') or '(none)'} "
                f"(allowed: {', '.join(self.workflow_list)})."
            )
        if self.environment and claims.get("environment") != self.environment:
            return (
                f"Policy {self.name} requires the GitHub environment {self.environment}, "
                f"not {claims.get('environment') or 'none'}."
            )
        return ""


def revoke_personal_tokens_of_deactivated(sender, instance, **kwargs):
    """post_save of a user: saved inactive (in the admin, a shell, anywhere), the tokens that act as them
    are revoked, as their sessions end (nexo_portal/sessions.py): reactivating them brings neither back."""
    if instance.is_active:
        return
    tokens = ApiToken.objects.filter(user=instance, revoked_at__isnull=True)
    if not tokens.exists():
        return
    with transaction.atomic():
        audit.lock_chain()  # the chain, then rows, as every writer takes them
        for token in tokens:
            token.revoke(by=None, because=f"the account it acts as, {instance.get_username()}, was deactivated")


class Session(AbstractBaseSession):
    """Django's database session, which knows whose it is: deactivating someone deletes theirs
    (nexo_portal/sessions.py), so that reactivating them does not let an old session cookie back in."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
