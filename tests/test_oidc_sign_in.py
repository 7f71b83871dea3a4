"""GitHub Actions sign in with their OIDC ID token: verified against a local issuer (discovery, JWKS,
real RS256 keys, rotation), trusted through the admin's trust policies, audited with its claims."""

import base64
import hashlib
import hmac
import json
import logging
import time

import pytest
from cryptography.hazmat.primitives import serialization
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.urls import reverse
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from audit.models import AuditAction, AuditEvent
from nexo_portal.lib import oidc
from nexo_portal.models import TrustPolicy
from releases.models import CheckResult, Release
from tests.factories import make_release, make_service
from tests.servers.loopback import Response
from tests.servers.oidc import OidcIssuer, new_key

pytestmark = pytest.mark.django_db

AUDIENCE = "https://portal.nexo.example"
SHA = "a3f2b1c" + "0" * 33
DIGEST = "sha256:" + "b" * 64
BUILD_WORKFLOW = "nexo-org/nexo-be/.github/workflows/build.yml@refs/heads/main"


@pytest.fixture
def issuer(settings, redis_connection):
    cache.clear()  # the throttle's counters
    issuer = OidcIssuer()
    settings.OIDC_ISSUER = issuer.issuer
    settings.OIDC_AUDIENCE = AUDIENCE
    settings.OIDC_JWKS_REFRESH_COOLDOWN_SECONDS = 0
    oidc._verifiers.clear()
    yield issuer
    issuer.close()
    oidc._verifiers.clear()


@pytest.fixture
def services(environments):
    return {"nexo-be": make_service("nexo-be", team="backend-team"), "nexo-fe": make_service("nexo-fe")}


@pytest.fixture
def policy(services):
    policy = TrustPolicy.objects.create(
        name="nexo-be-main",
        repository="nexo-org/nexo-be",
        refs="refs/heads/main\nrefs/tags/v*",
        workflows=BUILD_WORKFLOW,
        scopes="register report",
    )
    policy.services.set([services["nexo-be"]])
    return policy


def client_with(token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def register(token, service="nexo-be"):
    body = {"service": service, "commit_sha": SHA, "committed_at": "2026-02-03T10:00:00Z", "image_digest": DIGEST}
    return client_with(token).post("/api/v1/releases/", body, format="json")


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header, claims):
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}."


def test_a_trusted_run_registers_a_build_and_the_audit_event_keeps_its_claims(issuer, policy):
    answer = register(issuer.token(audience=AUDIENCE))

    assert answer.status_code == 201, answer.json()
    release = Release.objects.get()
    assert release.registered_by == "github-actions:nexo-org/nexo-be"
    event = AuditEvent.objects.get(action=AuditAction.RELEASE_REGISTERED)
    assert event.actor == "github-actions:nexo-org/nexo-be"
    claims = event.data["oidc"]
    assert claims["repository"] == "nexo-org/nexo-be"
    assert claims["ref"] == "refs/heads/main"
    assert claims["job_workflow_ref"] == BUILD_WORKFLOW
    assert claims["sub"] == "repo:nexo-org/nexo-be:ref:refs/heads/main"
    assert claims["iss"] == issuer.issuer
    assert claims["run_id"] == "7711"
    assert claims["trust_policies"] == ["nexo-be-main"]


def test_two_policies_never_combine_into_a_grant_neither_gives(issuer, policy, services):
    """nexo-be's build may register nexo-be (one policy) and report results of nexo-fe (another, for
    every workflow of main): it may not register nexo-fe, which no single policy allows."""
    reporting = TrustPolicy.objects.create(
        name="nexo-fe-results",
        repository="nexo-org/nexo-be",
        refs="refs/heads/main",
        workflows="nexo-org/nexo-be/.github/workflows/*@refs/heads/main",
        scopes="report",
    )
    reporting.services.set([services["nexo-fe"]])
    token = issuer.token(audience=AUDIENCE)

    refused = register(token, service="nexo-fe")

    assert refused.status_code == 403, refused.json()
    assert refused.json()["message"] == (
        "The trust policies of nexo-org/nexo-be may read nexo-fe but not use the 'register' scope on it. "
        "Ask a platform engineer to change the trust policy."
    )
    assert not Release.objects.filter(service=services["nexo-fe"]).exists()
    assert register(token).status_code == 201  # what a single policy gives still goes
    release = make_release(services["nexo-fe"], "2026.02.1")
    report = {"service": "nexo-fe", "version": release.version, "environment": "qa", "check": "e2e", "passed": True}
    assert client_with(token).post("/api/v1/verifications/", report, format="json").status_code == 201


def test_every_use_is_logged_with_its_claims_even_those_that_cause_no_audit_event(issuer, policy, caplog):
    token = issuer.token(audience=AUDIENCE)
    assert register(token).status_code == 201
    caplog.clear()

    with caplog.at_level(logging.INFO, logger="nexo_portal.tokens"):
        repeated = register(token)
        read = client_with(token).get("/api/v1/releases/?service=nexo-be")

    assert (repeated.status_code, read.status_code) == (200, 200)
    assert AuditEvent.objects.filter(action=AuditAction.RELEASE_REGISTERED).count() == 1, "the repeat is no event"
    lines = [record.getMessage() for record in caplog.records if "ID token trusted" in record.getMessage()]
    assert [line.split(":", 1)[0] for line in lines] == [
        "GitHub Actions ID token trusted for POST /api/v1/releases/",
        "GitHub Actions ID token trusted for GET /api/v1/releases/",
    ]
    claims = json.loads(lines[1].split(": ", 1)[1])
    assert (claims["repository"], claims["run_id"], claims["trust_policies"]) == (
        "nexo-org/nexo-be",
        "7711",
        ["nexo-be-main"],
    )
    assert token.split(".")[2] not in caplog.text, "never the token (its signature) itself"


def test_a_trusted_run_reports_a_result_and_the_report_is_audited_with_its_claims(issuer, policy, services):
    release = make_release(services["nexo-be"], "2026.02.1")
    body = {"service": "nexo-be", "version": release.version, "environment": "qa", "check": "e2e", "passed": True}

    answer = client_with(issuer.token(audience=AUDIENCE)).post("/api/v1/verifications/", body, format="json")

    assert answer.status_code == 201, answer.json()
    assert CheckResult.objects.get().reported_by == "github-actions:nexo-org/nexo-be"
    event = AuditEvent.objects.get(action=AuditAction.CHECK_REPORTED)
    assert event.data["oidc"]["workflow_ref"] == BUILD_WORKFLOW
    assert event.data["passed"] is True


def test_a_run_of_a_repository_with_the_longest_name_github_allows_registers_and_reports(issuer, policy, services):
    repository = f"{'o' * 39}/{'r' * 100}"  # GitHub's longest: a 39-character owner, a 100-character name
    policy.repository = repository
    policy.workflows = "*"
    policy.full_clean()
    policy.save()
    token = issuer.token(audience=AUDIENCE, repository=repository)

    registered = register(token)
    version = registered.json().get("version")
    report = {"service": "nexo-be", "version": version, "environment": "qa", "check": "e2e", "passed": True}
    reported = client_with(token).post("/api/v1/verifications/", report, format="json")

    assert (registered.status_code, reported.status_code) == (201, 201), (registered.content, reported.content)
    actor = f"github-actions:{repository}"
    assert Release.objects.get().registered_by == actor
    assert CheckResult.objects.get().reported_by == actor
    ours = AuditEvent.objects.filter(action__in=[AuditAction.RELEASE_REGISTERED, AuditAction.CHECK_REPORTED])
    assert list(ours.order_by("id").values_list("actor", flat=True)) == [actor, actor]


def oidc_calls(outcome):
    return REGISTRY.get_sample_value("nexo_outgoing_calls_total", {"target": "oidc", "outcome": outcome}) or 0


def test_the_discovery_document_and_keys_are_fetched_once_then_cached(issuer, policy):
    calls = oidc_calls("ok")
    for _ in range(3):
        assert client_with(issuer.token(audience=AUDIENCE)).get("/api/v1/releases/").status_code == 200

    assert issuer.requests.count("/.well-known/openid-configuration") == 1
    assert issuer.requests.count("/.well-known/jwks") == 1
    assert oidc_calls("ok") == calls + 2, "the two fetches are outgoing calls; the cached answers are not"


def test_a_rotated_key_is_fetched_when_a_token_names_it(issuer, policy):
    assert client_with(issuer.token(audience=AUDIENCE)).get("/api/v1/releases/").status_code == 200
    issuer.rotate()

    answer = client_with(issuer.token(audience=AUDIENCE)).get("/api/v1/releases/")

    assert answer.status_code == 200, answer.json()
    assert issuer.requests.count("/.well-known/jwks") == 2


def test_a_retired_key_no_longer_signs_once_the_keys_are_fetched_again(issuer, policy):
    old_kid = issuer.signing_kid
    old_token = issuer.token(audience=AUDIENCE)
    issuer.rotate()
    issuer.retire(old_kid)
    oidc._verifiers.clear()  # the cache expired

    answer = client_with(old_token).get("/api/v1/releases/")

    assert answer.status_code == 401
    assert "does not publish" in answer.json()["message"]


def refused(issuer, kind):
    """A token that must be refused, and the words the answer must say."""
    now = int(time.time())
    if kind == "wrong audience":
        return issuer.token(audience="https://other.example"), "audience"
    if kind == "wrong issuer":
        return issuer.token(audience=AUDIENCE, iss="https://token.actions.githubusercontent.com"), "not issued by"
    if kind == "expired":
        return issuer.token(audience=AUDIENCE, iat=now - 900, nbf=now - 900, exp=now - 120), "expired"
    if kind == "not yet valid":
        return issuer.token(audience=AUDIENCE, iat=now + 600, nbf=now + 600, exp=now + 900), "not valid yet"
    if kind == "issued in the future":
        return issuer.token(audience=AUDIENCE, iat=now + 600), "not valid yet"
    if kind == "alg none":
        header = {"alg": "none", "typ": "JWT", "kid": issuer.signing_kid}
        return unsigned(header, issuer.claims(audience=AUDIENCE)), "'none'"
    if kind == "HS256 signed with the public key":
        public_pem = (
            issuer.keys[issuer.signing_kid]
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        header = {"alg": "HS256", "typ": "JWT", "kid": issuer.signing_kid}
        signing_input = unsigned(header, issuer.claims(audience=AUDIENCE))[:-1]
        signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64(signature)}", "'HS256'"
    if kind == "unknown key id":
        return issuer.token(audience=AUDIENCE, kid="not-published", key=new_key()), "does not publish"
    if kind == "forged signature":
        return issuer.token(audience=AUDIENCE, key=new_key()), "signature"
    if kind == "claims changed after signing":
        header, _, signature = issuer.token(audience=AUDIENCE).split(".")
        forged = b64(json.dumps(issuer.claims(audience=AUDIENCE, repository="nexo-org/nexo-be")).encode())
        return f"{header}.{forged}.{signature}", "signature"
    if kind == "untrusted repository":
        return issuer.token(audience=AUDIENCE, repository="evil-org/nexo-be"), "No trust policy trusts"
    if kind == "disallowed branch":
        return (
            issuer.token(audience=AUDIENCE, ref="refs/heads/feature", job_workflow_ref=BUILD_WORKFLOW),
            "does not allow the ref refs/heads/feature",
        )
    if kind == "workflow not in the policy":
        other = "nexo-org/nexo-be/.github/workflows/anything.yml@refs/heads/main"
        token = issuer.token(audience=AUDIENCE, workflow_ref=other, job_workflow_ref=other)
        return token, "does not allow the workflow"
    if kind == "missing exp":
        return issuer.token(audience=AUDIENCE, exp=None), "'exp'"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "wrong audience",
        "wrong issuer",
        "expired",
        "not yet valid",
        "issued in the future",
        "alg none",
        "HS256 signed with the public key",
        "unknown key id",
        "forged signature",
        "claims changed after signing",
        "untrusted repository",
        "disallowed branch",
        "workflow not in the policy",
        "missing exp",
    ],
)
def test_tokens_that_must_not_be_trusted_are_refused_with_the_reason(issuer, policy, kind):
    token, reason = refused(issuer, kind)

    answer = register(token)

    assert answer.status_code == 401, answer.json()
    assert reason in answer.json()["message"]
    assert not Release.objects.exists()


def test_a_token_within_the_leeway_is_accepted(issuer, policy, settings):
    now = int(time.time())
    token = issuer.token(audience=AUDIENCE, exp=now - 5)  # clocks differ by seconds, not minutes

    assert settings.OIDC_LEEWAY_SECONDS >= 5
    assert register(token).status_code == 201


def test_a_policy_may_require_a_tag_and_a_github_environment(issuer, policy):
    policy.ref_type = "tag"
    policy.environment = "release"
    policy.workflows = "nexo-org/nexo-be/.github/workflows/build.yml@*"
    policy.save()

    branch = register(issuer.token(audience=AUDIENCE))
    tag_without_environment = register(
        issuer.token(
            audience=AUDIENCE,
            ref="refs/tags/v1.2",
            job_workflow_ref="nexo-org/nexo-be/.github/workflows/build.yml@refs/tags/v1.2",
            workflow_ref=BUILD_WORKFLOW,
        )
    )
    tag_in_environment = register(issuer.token(audience=AUDIENCE, ref="refs/tags/v1.2", environment="release"))

    assert branch.status_code == 401
    assert "allows a tag only, not a branch" in branch.json()["message"]
    assert tag_without_environment.status_code == 401
    assert "requires the GitHub environment release" in tag_without_environment.json()["message"]
    assert tag_in_environment.status_code == 201, tag_in_environment.json()


def test_an_inactive_policy_trusts_nothing(issuer, policy):
    policy.is_active = False
    policy.save()

    assert register(issuer.token(audience=AUDIENCE)).status_code == 401


def test_a_trusted_run_acts_only_on_its_policys_services(issuer, policy):
    answer = register(issuer.token(audience=AUDIENCE), service="nexo-fe")

    assert answer.status_code == 403
    assert "nexo-fe" in answer.json()["message"]


def test_a_run_whose_policys_services_were_all_deleted_reads_and_acts_on_none(issuer, policy, services):
    make_release(services["nexo-be"], "2026.02.1")
    typo = make_service("nexo-bee")
    policy.services.set([typo])
    typo.delete()
    client = client_with(issuer.token(audience=AUDIENCE))

    assert client.get("/api/v1/releases/").json()["count"] == 0
    assert client.get("/api/v1/matrix/").json() == []
    refused = register(issuer.token(audience=AUDIENCE))
    assert refused.status_code == 403
    assert refused.json()["message"] == (
        "The trust policies of nexo-org/nexo-be were limited to services that no longer exist: they allow "
        "none. Ask a platform engineer to change the trust policy."
    )


def test_the_admin_flags_a_policy_whose_services_were_all_deleted(client, django_user_model, policy, services):
    """Such a policy trusts runs to act on nothing; the list says so and finds them, rather than an empty cell."""
    operator = django_user_model.objects.create_superuser("operator", "op@nexo.invalid", "pw-for-tests-only")
    client.force_login(operator)
    typo = make_service("nexo-bee")
    orphan = TrustPolicy.objects.create(
        name="nexo-bee-main",
        repository="nexo-org/nexo-bee",
        refs="refs/heads/main",
        workflows=BUILD_WORKFLOW,
        scopes="register",
    )
    orphan.services.set([typo])
    typo.delete()

    listed = client.get(reverse("admin:nexo_portal_trustpolicy_changelist")).content.decode()
    found = client.get(reverse("admin:nexo_portal_trustpolicy_changelist"), {"services_left": "none"})

    assert "none left: its services were deleted, it trusts runs with nothing" in listed
    assert [row.name for row in found.context["cl"].result_list] == ["nexo-bee-main"]


@pytest.mark.parametrize("path", ["/api/v1/promotions/", "/api/v1/rollbacks/", "/api/v1/promotions/1/approve/"])
def test_a_trusted_run_never_promotes_nor_approves_and_is_told_so(issuer, policy, services, environments, path):
    """It was told its API token lacked the 'promote' scope and to ask for a token: it has no token, and no
    trust policy can give it that scope."""
    release = make_release(services["nexo-be"], "2026.02.1")
    client = client_with(issuer.token(audience=AUDIENCE))

    answer = client.post(
        path, {"service": "nexo-be", "version": release.version, "environment": "develop"}, format="json"
    )

    assert answer.status_code == 403
    assert answer.json()["message"] == (
        "A GitHub Actions run (nexo-org/nexo-be, signed in with its OIDC token) may register builds and report "
        "results only: no trust policy can let it request, approve, reject, cancel or stop promotions, nor roll "
        "back. Ask for the promotion on the board, or from a pipeline with an API token that has the 'promote' "
        "scope (a platform engineer creates it)."
    )
    assert "API token lacks" not in answer.json()["message"]


def test_a_trusted_run_without_a_scope_its_policies_could_give_is_told_to_change_them(issuer, policy, services):
    policy.scopes = "register"
    policy.save()
    release = make_release(services["nexo-be"], "2026.02.1")
    client = client_with(issuer.token(audience=AUDIENCE))

    answer = client.post(
        "/api/v1/verifications/",
        {"service": "nexo-be", "version": release.version, "environment": "qa", "check": "e2e", "passed": True},
        format="json",
    )

    assert answer.status_code == 403
    assert answer.json()["message"] == (
        "The trust policies of nexo-org/nexo-be do not give the 'report' scope; ask a platform engineer to add it "
        "to the trust policy."
    )


def test_without_an_audience_the_portal_refuses_id_tokens(issuer, policy, settings):
    settings.OIDC_AUDIENCE = ""

    answer = register(issuer.token(audience=AUDIENCE))

    assert answer.status_code == 401
    assert "OIDC_AUDIENCE" in answer.json()["message"]


def test_an_issuer_out_of_reach_is_said_as_such_not_blamed_on_the_token(issuer, policy):
    token = issuer.token(audience=AUDIENCE)
    issuer.close()
    errors = oidc_calls("error")

    answer = register(token)

    assert answer.status_code == 503
    assert "discovery document" in answer.json()["message"]
    assert oidc_calls("error") == errors + 1, "counted as a call that got no answer"


@pytest.mark.parametrize(
    "answer",
    [
        Response.text(200, "<html><body>Down for maintenance</body></html>", "text/html"),
        Response.json(200, {"keys": []}),
        Response.json(200, {"keys": "none"}),
        Response.json(200, [{"kty": "RSA"}]),
        Response.json(200, {"keys": [{"kty": "RSA", "kid": "k1", "use": "enc", "n": "AQAB", "e": "AQAB"}]}),
    ],
    ids=["html", "no-keys", "keys-not-a-list", "a-json-array", "encryption-keys-only"],
)
def test_an_issuer_serving_no_usable_key_set_is_a_503_not_the_tokens_fault(issuer, policy, answer):
    """A maintenance page or a broken key set at the jwks_uri is the issuer's trouble, said as such: the
    API answers 503 in its error body, never a 500 page, nor a 401 that blames the run's token."""
    token = issuer.token(audience=AUDIENCE)
    issuer.jwks_answer = answer

    response = register(token)

    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/json"
    assert "keys" in response.json()["message"]
    assert not Release.objects.exists()


def test_a_discovery_document_out_of_reach_is_asked_once_and_the_known_keys_go_on(issuer, policy, settings):
    """The issuer's discovery fails after the cache's time: the keys discovered before still verify (they
    were the issuer's a moment ago), and the failure is remembered, not asked again by every request."""
    settings.OIDC_JWKS_CACHE_SECONDS = 1
    oidc._verifiers.clear()
    assert register(issuer.token(audience=AUDIENCE)).status_code == 201
    time.sleep(1.1)  # past the cache's time: discovered again at the next request
    issuer.discovery_answer = Response.text(503, "upstream connect error", "text/plain")
    issuer.requests.clear()

    for number in range(3):
        body = {"service": "nexo-be", "commit_sha": f"{number}" * 40, "committed_at": "2026-02-03T10:00:00Z"}
        body["image_digest"] = "sha256:" + f"{number}" * 64
        answer = client_with(issuer.token(audience=AUDIENCE)).post("/api/v1/releases/", body, format="json")
        assert answer.status_code == 201, answer.json()

    assert issuer.requests.count("/.well-known/openid-configuration") == 1


def test_an_issuer_never_discovered_and_out_of_reach_is_asked_once_for_a_while(issuer, policy):
    issuer.discovery_answer = Response.text(503, "upstream connect error", "text/plain")
    token = issuer.token(audience=AUDIENCE)

    answers = [register(token).status_code for _ in range(3)]

    assert answers == [503, 503, 503]
    assert issuer.requests.count("/.well-known/openid-configuration") == 1


def test_a_policy_pinned_to_the_repositorys_id_trusts_no_repository_re_created_under_its_name(issuer, policy):
    """The repository was deleted (or renamed) and someone else made one under the same name: the name
    matches, GitHub's numeric id does not."""
    policy.repository_id = "74"
    policy.full_clean()
    policy.save()
    assert register(issuer.token(audience=AUDIENCE)).status_code == 201

    answer = register(issuer.token(audience=AUDIENCE, repository_id="90210"))

    assert answer.status_code == 401
    assert "with the repository id 74 only, not 90210" in answer.json()["message"]


def test_a_repository_id_is_a_number(policy):
    policy.repository_id = "nexo-be"
    with pytest.raises(ValidationError) as refused:
        policy.full_clean()
    assert "repository_id" in refused.value.message_dict


def test_the_database_refuses_a_policy_that_could_promote(policy):
    policy.scopes = "register promote"
    with pytest.raises(IntegrityError):
        policy.save()


def test_trust_policies_added_and_changed_in_the_admin_are_audited(client, django_user_model, services):
    operator = django_user_model.objects.create_superuser("operator", "op@nexo.invalid", "pw-for-tests-only")
    client.force_login(operator)
    form = {
        "name": "nexo-be-main",
        "repository": "nexo-org/nexo-be",
        "refs": "refs/heads/main",
        "ref_type": "branch",
        "workflows": BUILD_WORKFLOW,
        "environment": "",
        "services": [services["nexo-be"].pk],
        "scopes": ["register"],
        "is_active": "on",
    }

    added = client.post(reverse("admin:nexo_portal_trustpolicy_add"), form)
    policy = TrustPolicy.objects.get()
    changed = client.post(
        reverse("admin:nexo_portal_trustpolicy_change", args=[policy.pk]),
        {**form, "refs": "refs/heads/main\nrefs/heads/release/*", "scopes": ["register", "report"]},
    )

    assert added.status_code == changed.status_code == 302
    policy.refresh_from_db()
    assert policy.created_by == operator
    assert policy.scope_list == ["register", "report"]
    events = AuditEvent.objects.filter(data__model="nexo_portal.TrustPolicy").order_by("id")
    assert [event.action for event in events] == [AuditAction.ADMIN_ADDED, AuditAction.ADMIN_CHANGED]
    assert events[1].data["changes"]["refs"] == ["refs/heads/main", "refs/heads/main\nrefs/heads/release/*"]
    assert events[1].data["changes"]["scopes"] == ["register", "register report"]


def test_the_admin_offers_no_scope_beyond_register_and_report(client, django_user_model, services):
    operator = django_user_model.objects.create_superuser("operator", "op@nexo.invalid", "pw-for-tests-only")
    client.force_login(operator)

    answer = client.post(
        reverse("admin:nexo_portal_trustpolicy_add"),
        {
            "name": "sneaky",
            "repository": "nexo-org/nexo-be",
            "refs": "refs/heads/main",
            "workflows": BUILD_WORKFLOW,
            "services": [services["nexo-be"].pk],
            "scopes": ["promote"],
        },
    )

    assert answer.status_code == 200
    assert "promote is not one of the available choices" in answer.content.decode()
    assert not TrustPolicy.objects.exists()


def save_in_the_admin(client, operator, services, **changes):
    """Add a policy in the admin as a platform engineer would; the page it lands on, with its messages."""
    client.force_login(operator)
    form = {
        "name": "nexo-be-main",
        "repository": "nexo-org/nexo-be",
        "refs": "refs/heads/main",
        "ref_type": "branch",
        "workflows": BUILD_WORKFLOW,
        "environment": "",
        "services": [services["nexo-be"].pk],
        "scopes": ["register"],
        "is_active": "on",
        **changes,
    }
    answer = client.post(reverse("admin:nexo_portal_trustpolicy_add"), form, follow=True)
    assert TrustPolicy.objects.filter(name=form["name"]).exists(), "a warning, not a refusal"
    return [(message.level_tag, message.message) for message in answer.context["messages"]]


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_superuser("operator", "op@nexo.invalid", "pw-for-tests-only")


@pytest.mark.parametrize("refs", ["*", "refs/heads/*", "refs/heads/main\nrefs/*"])
def test_the_admin_warns_of_a_policy_trusting_every_branch_and_says_what_that_allows(client, operator, services, refs):
    messages = save_in_the_admin(client, operator, services, refs=refs, scopes=["register", "report"])

    trusted = ", ".join(refs.splitlines()[-1:])
    assert (
        "warning",
        f"nexo-be-main trusts every branch ({trusted}): a workflow run on any branch of nexo-org/nexo-be, which "
        "anyone who may push to it can create, can register builds and report CI results of nexo-be. List the refs "
        "you release from, e.g. refs/heads/main.",
    ) in messages


@pytest.mark.parametrize(
    "workflows",
    ["*", "nexo-org/nexo-be/*", "nexo-org/nexo-be/.github/workflows/*@refs/heads/trunk", "*@refs/heads/main"],
)
def test_the_admin_warns_of_a_policy_trusting_every_workflow_and_says_what_that_allows(
    client, operator, services, workflows
):
    messages = save_in_the_admin(client, operator, services, workflows=workflows)

    assert (
        "warning",
        f"nexo-be-main trusts every workflow ({workflows}): any workflow run in nexo-org/nexo-be, not only the one "
        "that builds, can register builds of nexo-be. List the workflows that build, e.g. "
        "nexo-org/nexo-be/.github/workflows/build.yml@refs/heads/main.",
    ) in messages


@pytest.mark.parametrize(
    ("refs", "workflows"),
    [
        ("refs/heads/main\nrefs/tags/v*", BUILD_WORKFLOW),
        ("refs/heads/release/*", "nexo-org/nexo-be/.github/workflows/build.yml@*"),
        ("refs/heads/a*", "nexo-org/nexo-be/.github/workflows/b*.yml@refs/heads/main"),
    ],
)
def test_the_admin_says_nothing_of_a_policy_trusting_some_refs_and_workflows(
    client, operator, services, refs, workflows
):
    messages = save_in_the_admin(client, operator, services, refs=refs, workflows=workflows)

    assert [level for level, _ in messages] == ["success"]
