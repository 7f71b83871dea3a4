"""Before a promotion into an environment that requires an attestation, a Sigstore bundle attached to the
image in the real registry (Debian's docker-registry, behind its token flow) as GitHub's
attest-build-provenance attaches it must verify offline, with the `sigstore` library, against the
configured trusted root and the service's workflow identity, and its statement must be about the digest.

The bundles are issued by tests/sigstore_instance.py: a Fulcio CA, CT log and Rekor of the tests' own,
named by the trusted_root.json the portal is given, so every signature and proof the Verifier checks is real.
"""

import base64
import json
import shutil

import pytest
from django.core.exceptions import ValidationError

from audit.models import AuditAction, AuditEvent
from releases import attestations, jobs, transitions
from releases import registry as registry_api
from releases.models import PromotionKind, PromotionState
from tests.factories import make_release, make_service
from tests.registry import REGISTRY_BINARY, Registry
from tests.sigstore_instance import (
    GITHUB_ISSUER,
    SigstoreInstance,
    github_claims,
    github_identity,
    in_toto_statement,
)
from tests.test_image_gate import register_a_build

pytestmark = pytest.mark.skipif(
    shutil.which(REGISTRY_BINARY) is None, reason="Debian's docker-registry is not installed (scripts/test installs it)"
)

REPOSITORY = "nexo-org/nexo-be"
USERS = {"ci": ("ci-password", {"pull", "push"}), "nexo-portal": ("portal-password", {"pull"})}
WORKFLOW = github_identity()


@pytest.fixture(scope="module")
def sigstore():
    return SigstoreInstance()


@pytest.fixture
def registry(tmp_path, settings, sigstore):
    registry = Registry(tmp_path, USERS)
    settings.REGISTRY_INSECURE_HOSTS = [registry.host]
    settings.REGISTRY_CREDENTIALS = {registry.host: "nexo-portal:portal-password"}
    root = tmp_path / "trusted_root.json"
    root.write_text(json.dumps(sigstore.trusted_root()))
    settings.SIGSTORE_TRUSTED_ROOT = str(root)
    yield registry
    registry.close()


@pytest.fixture
def service(pipeline, registry):
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    service = pipeline.add_service("nexo-be")
    service.image_repository = f"{registry.host}/{REPOSITORY}"
    service.attestation_identity = WORKFLOW
    service.save()
    return service


def require_attestation(pipeline):
    develop = pipeline.environments["develop"]
    develop.requires_attestation = True
    develop.save()
    return develop


def promote(pipeline, release):
    promotion = transitions.request_promotion(release, pipeline.environments["develop"], None, kind=PromotionKind.AUTO)
    jobs.commit_promotion(promotion.pk)
    promotion.refresh_from_db()
    return promotion


def pushed_release(registry, service):
    release = make_release(service, "2026.02.1", commit_sha="a3f2b1c" + "0" * 33, image_digest="sha256:" + "0" * 64)
    release.image_digest = registry.push_image(REPOSITORY, tags=release.tags())
    release.save(update_fields=["image_digest"])
    return release


def attest(registry, sigstore, digest, **kwargs):
    statement = in_toto_statement([kwargs.pop("about", digest)])
    kwargs.setdefault("identity", WORKFLOW)
    kwargs.setdefault("claims", github_claims())
    bundle = kwargs.pop("bundle", None) or sigstore.attest(statement, **kwargs)
    return registry.attach_bundle(REPOSITORY, digest, bundle)


def last_image_event():
    return AuditEvent.objects.filter(action=AuditAction.IMAGE_CHECKED).latest("id")


def test_an_attestation_by_the_services_workflow_passes_and_is_kept_on_the_release(
    pipeline, registry, service, sigstore
):
    require_attestation(pipeline)
    release = pushed_release(registry, service)
    referrer = attest(registry, sigstore, release.image_digest)

    promotion = promote(pipeline, release)

    assert promotion.state == PromotionState.COMMITTED, promotion.error
    release.refresh_from_db()
    assert release.attested_by == WORKFLOW
    assert release.attestation_claims["issuer"] == GITHUB_ISSUER
    assert release.attestation_claims["repository"] == "https://github.com/nexo-org/nexo-be"
    assert release.attestation_claims["ref"] == "refs/heads/main"
    assert release.attestation_claims["commit"] == "a3f2b1c" + "0" * 33
    assert release.attestation_claims["trigger"] == "push"
    assert release.attestation_claims["run"] == "https://github.com/nexo-org/nexo-be/actions/runs/4711/attempts/1"
    assert release.attestation_claims["predicate_type"] == "https://slsa.dev/provenance/v1"
    assert release.attestation_claims["bundle"] == referrer
    assert release.attested_at is not None
    assert release.attestation_verified_at is not None
    event = last_image_event()
    assert event.data["verdict"] == "passed"
    assert event.data["attested_by"]["identity"] == WORKFLOW
    assert event.data["attested_by"]["logged_at"] == release.attested_at.isoformat()


def test_the_bundle_is_found_through_the_referrers_tag_where_the_registry_has_no_referrers_api(
    registry, service, sigstore
):
    release = pushed_release(registry, service)
    referrer = attest(registry, sigstore, release.image_digest)
    client = registry_api.RegistryClient.for_repository(service.image_repository)

    api = client.request("GET", f"referrers/{release.image_digest}")
    found = client.referrers(release.image_digest, attestations.BUNDLE_TYPE)

    assert api.status_code == 404, "distribution 2.8 has no referrers API: the tag schema is the way"
    assert [entry["digest"] for entry in found] == [referrer]


def other_root_bundle(registry, sigstore, digest):
    return SigstoreInstance("elsewhere").attest(in_toto_statement([digest]), identity=WORKFLOW, claims=github_claims())


def tampered(registry, sigstore, digest):
    bundle = json.loads(sigstore.attest(in_toto_statement([digest]), identity=WORKFLOW, claims=github_claims()))
    envelope = bundle["dsseEnvelope"]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["runDetails"]["builder"]["id"] = "https://example.com/a-laptop"
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    return json.dumps(bundle).encode()


def bad_signature(registry, sigstore, digest):
    bundle = json.loads(sigstore.attest(in_toto_statement([digest]), identity=WORKFLOW, claims=github_claims()))
    signature = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
    signature[-1] ^= 0x01
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(signature)).decode()
    return json.dumps(bundle).encode()


REFUSALS = {
    "another workflow": (
        {"identity": github_identity(workflow="release-anything.yml")},
        "SANs do not match " + WORKFLOW,
    ),
    "another branch": ({"identity": github_identity(ref="refs/heads/feature")}, "refs/heads/feature"),
    "another issuer": (
        {"issuer": "https://accounts.google.com"},
        f"OIDCIssuer does not match (got 'https://accounts.google.com', expected '{GITHUB_ISSUER}')",
    ),
    "a statement about another image": ({"about": "sha256:" + "e" * 64}, "is about another image (sha256:" + "e" * 64),
    "a tampered statement": ({"bundle": tampered}, "DSSE: invalid signature"),
    "a tampered signature": ({"bundle": bad_signature}, "DSSE: invalid signature"),
    "a root the portal does not trust": ({"bundle": other_root_bundle}, "certificate chain"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_bad_attestation_refuses_the_promotion_and_says_what(pipeline, registry, service, sigstore, case):
    require_attestation(pipeline)
    release = pushed_release(registry, service)
    kwargs, reason = REFUSALS[case]
    kwargs = dict(kwargs)
    if callable(kwargs.get("bundle")):
        kwargs["bundle"] = kwargs["bundle"](registry, sigstore, release.image_digest)
    attest(registry, sigstore, release.image_digest, **kwargs)
    head = pipeline.gitops.head()

    promotion = promote(pipeline, release)

    assert promotion.state == PromotionState.FAILED
    assert promotion.failed_step == "image"
    assert reason in promotion.error
    assert pipeline.gitops.head() == head, "nothing was committed"
    release.refresh_from_db()
    assert release.attested_by == ""
    assert release.attestation_verified_at is None
    event = last_image_event()
    assert (event.data["verdict"], event.promotion_id) == ("refused", promotion.pk)
    assert reason in event.data["reason"]


def test_an_image_without_any_attestation_is_refused(pipeline, registry, service):
    require_attestation(pipeline)
    release = pushed_release(registry, service)

    promotion = promote(pipeline, release)

    assert promotion.state == PromotionState.FAILED
    assert f"{release.image_digest} has no Sigstore attestation in the registry" in promotion.error


def test_a_service_without_an_expected_identity_is_refused_with_what_to_set(pipeline, registry, service, sigstore):
    require_attestation(pipeline)
    service.attestation_identity = ""
    service.save()
    release = pushed_release(registry, service)
    attest(registry, sigstore, release.image_digest)

    promotion = promote(pipeline, release)

    assert promotion.state == PromotionState.FAILED
    assert "no attestation identity configured" in promotion.error


def test_the_public_good_root_is_the_default_and_does_not_trust_a_private_instance(
    pipeline, registry, service, sigstore, settings, monkeypatch, tmp_path
):
    # The library copies the root it ships into its cache directory: keep that in the test's.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    settings.SIGSTORE_TRUSTED_ROOT = ""
    require_attestation(pipeline)
    release = pushed_release(registry, service)
    attest(registry, sigstore, release.image_digest)

    promotion = promote(pipeline, release)

    assert promotion.state == PromotionState.FAILED
    assert "certificate chain" in promotion.error


def test_an_unreadable_trusted_root_refuses_with_its_path(pipeline, registry, service, sigstore, settings, tmp_path):
    settings.SIGSTORE_TRUSTED_ROOT = str(tmp_path / "missing.json")
    require_attestation(pipeline)
    release = pushed_release(registry, service)
    attest(registry, sigstore, release.image_digest)

    promotion = promote(pipeline, release)

    assert promotion.state == PromotionState.FAILED
    assert f"The Sigstore trusted root {tmp_path / 'missing.json'} cannot be read" in promotion.error


def test_the_release_and_promotion_pages_show_the_identity_that_attested(
    pipeline, registry, service, sigstore, client, rita
):
    require_attestation(pipeline)
    release = pushed_release(registry, service)
    attest(registry, sigstore, release.image_digest)
    promotion = promote(pipeline, release)
    client.force_login(rita)

    release_page = client.get(release.get_absolute_url()).content.decode()
    promotion_page = client.get(promotion.get_absolute_url()).content.decode()

    assert "Sigstore attestation verified" in release_page
    assert f'signed by <code class="small">{WORKFLOW}</code>' in release_page
    assert "https://github.com/nexo-org/nexo-be at refs/heads/main" in release_page
    assert 'href="https://github.com/nexo-org/nexo-be/actions/runs/4711/attempts/1"' in release_page
    assert "a Sigstore attestation by the service&#x27;s workflow identity" in promotion_page
    assert f'Attested by <code class="small">{WORKFLOW}</code>' in promotion_page


@pytest.mark.parametrize(
    ("identity", "issuer", "field"),
    [
        (WORKFLOW, GITHUB_ISSUER, None),
        (github_identity(ref="refs/tags/v1.2.0"), GITHUB_ISSUER, None),
        (github_identity("nexo-org/shared-workflows", "attest.yml", "9" * 40), GITHUB_ISSUER, None),
        (github_identity(ref="main"), GITHUB_ISSUER, "attestation_identity"),
        ("", GITHUB_ISSUER, None),
        ("https://github.com/nexo-org/nexo-be", GITHUB_ISSUER, "attestation_identity"),
        ("nexo-org/nexo-be/.github/workflows/build.yml@refs/heads/main", GITHUB_ISSUER, "attestation_identity"),
        ("release-bot@nexo.example", "https://accounts.google.com", None),
        ("release-bot", "https://accounts.google.com", "attestation_identity"),
        (WORKFLOW, "http://token.actions.githubusercontent.com", "attestation_issuer"),
        (WORKFLOW, "", "attestation_issuer"),
    ],
)
def test_a_service_refuses_an_identity_the_gate_could_never_match(environments, identity, issuer, field):
    service = make_service("nexo-be", attestation_identity=identity, attestation_issuer=issuer)

    if field is None:
        service.full_clean()
    else:
        with pytest.raises(ValidationError) as refused:
            service.full_clean()
        assert field in refused.value.message_dict


def test_the_registration_answer_names_the_attestation_requirement(environments, rita):
    make_service("nexo-be", team="backend-team")
    environments["production"].requires_attestation = True
    environments["production"].save()

    answer = register_a_build(rita)

    assert answer.status_code == 201, answer.json()
    assert answer.json()["image_requirements"] == {
        # The tag is what GitOps deploys: an attestation of the digest requires the tags checked too.
        "production": [
            "digest and tags checked in the registry",
            "a Sigstore attestation by the service's workflow identity",
        ]
    }
