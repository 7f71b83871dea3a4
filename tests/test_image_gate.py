"""Before a promotion into an environment that requires it, the real registry (Debian's docker-registry,
behind its bearer-token flow) must hold the digest, every version tag must point to it, and a Cosign
signature by the service's key must verify; otherwise the promotion fails at "image" with the reason."""

import json
import shutil

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.core.exceptions import ValidationError
from prometheus_client import REGISTRY as PROMETHEUS
from rest_framework.test import APIClient

from audit.models import AuditAction, AuditEvent
from nexo_portal.lib.errors import Unavailable
from releases import jobs, signatures, transitions
from releases.models import PromotionKind, PromotionState
from releases.registry import Manifest
from releases.signatures import SIGNATURE_ANNOTATION as SIGNATURE
from releases.signatures import SIMPLE_SIGNING, fingerprint
from tests.factories import make_release, make_service
from tests.registry import REGISTRY_BINARY, Registry, public_key_pem
from tests.servers.loopback import LoopbackServer, Response

pytestmark = pytest.mark.skipif(
    shutil.which(REGISTRY_BINARY) is None, reason="Debian's docker-registry is not installed (scripts/test installs it)"
)

REPOSITORY = "nexo-org/nexo-be"
USERS = {"ci": ("ci-password", {"pull", "push"}), "nexo-portal": ("portal-password", {"pull"})}


@pytest.fixture
def registry(tmp_path, settings):
    registry = Registry(tmp_path, USERS)
    settings.REGISTRY_INSECURE_HOSTS = [registry.host]
    settings.REGISTRY_CREDENTIALS = {registry.host: "nexo-portal:portal-password"}
    yield registry
    registry.close()


@pytest.fixture
def signing_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def service(pipeline, registry, signing_key):
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    service = pipeline.add_service("nexo-be")
    service.image_repository = f"{registry.host}/{REPOSITORY}"
    service.signing_public_keys = public_key_pem(signing_key)
    service.save()
    return service


def require(pipeline, *, image_check=True, signature=False):
    develop = pipeline.environments["develop"]
    develop.requires_image_check = image_check
    develop.requires_signature = signature
    develop.save()
    return develop


def promote(pipeline, release):
    promotion = transitions.request_promotion(release, pipeline.environments["develop"], None, kind=PromotionKind.AUTO)
    jobs.commit_promotion(promotion.pk)
    promotion.refresh_from_db()
    return promotion


def image_events():
    return list(AuditEvent.objects.filter(action=AuditAction.IMAGE_CHECKED).order_by("id"))


def pushed_release(registry, service, version="2026.02.1", **tags):
    release = make_release(service, version, commit_sha="a3f2b1c" + "0" * 33, image_digest="sha256:" + "0" * 64)
    digest = registry.push_image(REPOSITORY, tags=release.tags())
    release.image_digest = digest
    release.save(update_fields=["image_digest"])
    return release


def registry_calls(outcome):
    return PROMETHEUS.get_sample_value("nexo_outgoing_calls_total", {"target": "registry", "outcome": outcome}) or 0


def test_the_digest_and_its_tags_pass_through_the_registrys_token_flow(pipeline, registry, service):
    require(pipeline)
    release = pushed_release(registry, service)
    calls = registry_calls("ok")

    promotion = promote(pipeline, release)

    assert promotion.state == PromotionState.COMMITTED, promotion.error
    release.refresh_from_db()
    assert release.image_checked_at is not None
    event = image_events()[-1]
    assert event.data["verdict"] == "passed"
    assert event.data["tags"] == {tag: release.image_digest for tag in release.tags()}
    # The portal asked the token service, with its own (pull-only) account, for pull access.
    assert ("nexo-portal", f"repository:{REPOSITORY}:pull") in registry.tokens.requests
    # Counted as outgoing calls: the token, the manifest and each tag (the 401 challenge is a 4xx).
    assert registry_calls("ok") >= calls + 2 + len(release.tags())


def test_a_tag_pointing_elsewhere_refuses_the_promotion_and_says_where_it_points(pipeline, registry, service):
    require(pipeline)
    release = pushed_release(registry, service)
    moved_tag = release.tags()[1]
    other = registry.push_image(REPOSITORY, tags=[moved_tag])
    head = pipeline.gitops.head()

    promotion = promote(pipeline, release)

    assert promotion.state == PromotionState.FAILED
    assert promotion.failed_step == "image"
    assert f"{moved_tag} points to {other}" in promotion.error
    assert image_events()[-1].data["verdict"] == "refused"
    assert pipeline.gitops.head() == head, "nothing was committed"


def test_a_missing_tag_is_named(pipeline, registry, service):
    require(pipeline)
    release = make_release(service, "2026.02.1", commit_sha="a3f2b1c" + "0" * 33, image_digest="sha256:" + "0" * 64)
    release.image_digest = registry.push_image(REPOSITORY, tags=[release.version])
    release.save(update_fields=["image_digest"])

    promotion = promote(pipeline, release)

    assert promotion.state == PromotionState.FAILED
    assert f"{release.tags()[1]} does not exist" in promotion.error


def test_a_digest_the_registry_does_not_have_refuses_the_promotion(pipeline, registry, service):
    require(pipeline)
    release = make_release(service, "2026.02.1", image_digest="sha256:" + "c" * 64)

    promotion = promote(pipeline, release)

    assert promotion.state == PromotionState.FAILED
    assert f"{registry.host}/{REPOSITORY}@sha256:{'c' * 64} does not exist" in promotion.error


def test_an_environment_that_requires_nothing_asks_no_registry(pipeline, registry, service):
    require(pipeline, image_check=False)
    release = make_release(service, "2026.02.1", image_digest="sha256:" + "c" * 64)

    promotion = promote(pipeline, release)

    assert promotion.state == PromotionState.COMMITTED
    assert registry.tokens.requests == []


def test_a_registry_out_of_reach_is_tried_again_not_failed(pipeline, registry, service):
    require(pipeline)
    release = pushed_release(registry, service)
    registry.close()
    errors = registry_calls("error")

    promotion = transitions.request_promotion(release, pipeline.environments["develop"], None, kind=PromotionKind.AUTO)
    with pytest.raises(Unavailable):
        jobs.commit_promotion(promotion.pk)
    assert registry_calls("error") == errors + 1, "the call that got no answer is counted"

    promotion.refresh_from_db()
    assert promotion.state == PromotionState.APPROVED


def test_a_registry_rate_limiting_the_portal_is_tried_again_not_failed(pipeline, registry, service, settings):
    """Docker Hub's pull rate limit (429 TOOMANYREQUESTS, as the distribution spec's error body): a
    moment's refusal, asked again with the step's backoff, not a release the registry does not hold."""
    require(pipeline)
    release = pushed_release(registry, service)
    body = {
        "errors": [
            {
                "code": "TOOMANYREQUESTS",
                "message": "You have reached your pull rate limit. You may increase the limit by authenticating "
                "and upgrading: https://www.docker.com/increase-rate-limit",
            }
        ]
    }
    limited = LoopbackServer(lambda request: Response(429, json.dumps(body).encode(), {"Retry-After": "60"}))
    try:
        host = limited.url.removeprefix("http://")
        settings.REGISTRY_INSECURE_HOSTS = [host]
        service.image_repository = f"{host}/{REPOSITORY}"
        service.save()
        promotion = transitions.request_promotion(
            release, pipeline.environments["develop"], None, kind=PromotionKind.AUTO
        )
        with pytest.raises(Unavailable, match="429"):
            jobs.commit_promotion(promotion.pk)
    finally:
        limited.close()

    promotion.refresh_from_db()
    assert promotion.state == PromotionState.APPROVED


def test_the_registrys_password_never_goes_to_a_plain_http_token_service_elsewhere(
    pipeline, registry, service, settings
):
    """A registry (or something answering in its name) sending the portal to http://another-host/token:
    REGISTRY_CREDENTIALS would leave in the clear, to a host that is not the registry. Refused."""
    require(pipeline)
    release = pushed_release(registry, service)
    asked = []
    elsewhere = LoopbackServer(lambda request: asked.append(request.path) or Response(200, b'{"token": "t"}', {}))
    realm = elsewhere.url.replace("127.0.0.1", "localhost") + "/token"
    challenge = f'Bearer realm="{realm}",service="registry",scope="repository:{REPOSITORY}:pull"'
    impostor = LoopbackServer(lambda request: Response(401, b"{}", {"WWW-Authenticate": challenge}))
    try:
        host = impostor.url.removeprefix("http://")
        settings.REGISTRY_INSECURE_HOSTS = [host]
        settings.REGISTRY_CREDENTIALS = {host: "nexo-portal:portal-password"}
        service.image_repository = f"{host}/{REPOSITORY}"
        service.save()
        promotion = promote(pipeline, release)
    finally:
        impostor.close()
        elsewhere.close()

    assert (promotion.state, promotion.failed_step) == (PromotionState.FAILED, "image")
    assert "its credentials are not sent there" in promotion.error
    assert asked == []


def test_a_portal_account_the_token_service_refuses_fails_with_what_to_fix(pipeline, registry, service, settings):
    require(pipeline)
    release = pushed_release(registry, service)
    settings.REGISTRY_CREDENTIALS = {registry.host: "nexo-portal:wrong"}

    promotion = promote(pipeline, release)

    assert promotion.state == PromotionState.FAILED
    assert "token service" in promotion.error
    assert "refused the portal (401)" in promotion.error


def test_a_cosign_signature_by_the_services_key_is_verified_and_kept_on_the_release(
    pipeline, registry, service, signing_key
):
    require(pipeline, signature=True)
    release = pushed_release(registry, service)
    registry.sign(REPOSITORY, release.image_digest, signing_key)

    promotion = promote(pipeline, release)

    assert promotion.state == PromotionState.COMMITTED, promotion.error
    release.refresh_from_db()
    assert release.signed_by == fingerprint(signing_key.public_key())
    assert release.signature_verified_at is not None
    assert image_events()[-1].data["signed_by"] == release.signed_by


def test_a_second_configured_key_is_accepted_too(pipeline, registry, service, signing_key):
    require(pipeline, image_check=False, signature=True)
    new_key = ec.generate_private_key(ec.SECP256R1())
    service.signing_public_keys = public_key_pem(signing_key) + public_key_pem(new_key)
    service.save()
    release = pushed_release(registry, service)
    registry.sign(REPOSITORY, release.image_digest, new_key)

    promotion = promote(pipeline, release)

    assert promotion.state == PromotionState.COMMITTED, promotion.error
    release.refresh_from_db()
    assert release.signed_by == fingerprint(new_key.public_key())


def test_a_signature_checked_where_tags_are_not_required_still_checks_the_tag_deployed(
    pipeline, registry, service, signing_key
):
    """GitOps deploys the version's tag, not the digest: a signed digest proves nothing of an image the
    tag names instead (pushed over it, unsigned). Whatever is required of the digest, the tags are checked."""
    require(pipeline, image_check=False, signature=True)
    release = pushed_release(registry, service)
    registry.sign(REPOSITORY, release.image_digest, signing_key)
    unsigned = registry.push_image(REPOSITORY, tags=[release.version])  # the tag moved to another image

    promotion = promote(pipeline, release)

    assert (promotion.state, promotion.failed_step) == (PromotionState.FAILED, "image")
    assert unsigned in promotion.error
    assert image_events()[-1].data["verdict"] == "refused"


def refusal(registry, release, signing_key, kind):
    digest = release.image_digest
    if kind == "unsigned":
        return "is not signed"
    if kind == "signed by another key":
        registry.sign(REPOSITORY, digest, ec.generate_private_key(ec.SECP256R1()))
        return "made by none of the service's keys"
    if kind == "a signature of another image":
        other = registry.push_image(REPOSITORY)
        registry.sign(REPOSITORY, digest, signing_key, payload_digest=other)
        return f"names another image ({other})"
    raise AssertionError(kind)


class RegistryAnswering:
    """A registry client whose signature manifest is `body` (what a proxy or a broken registry serves
    at the `.sig` tag, which Debian's registry itself would refuse to store)."""

    def __init__(self, body):
        self.body = body

    def manifest(self, reference, *, media_types=()):
        return Manifest(digest="sha256:" + "1" * 64, media_type="application/json", body=self.body)

    def blob(self, digest):
        return None


@pytest.mark.parametrize(
    "body",
    [
        b"<html>Bad gateway</html>",
        b"[]",
        b'{"layers": {"x": 1}}',
        b'{"layers": ["x"]}',
        json.dumps({"layers": [{"mediaType": SIMPLE_SIGNING, "annotations": {SIGNATURE: 7}}]}).encode(),
        json.dumps({"layers": [{"mediaType": SIMPLE_SIGNING, "annotations": ["x"]}]}).encode(),
    ],
    ids=["html", "a-list", "layers-an-object", "layers-of-strings", "annotation-a-number", "annotations-a-list"],
)
def test_a_signature_manifest_of_another_shape_is_a_refusal_not_a_crash(signing_key, body):
    with pytest.raises(signatures.SignatureRefused):
        signatures.verify(RegistryAnswering(body), "sha256:" + "0" * 64, public_key_pem(signing_key))


@pytest.mark.parametrize("kind", ["unsigned", "signed by another key", "a signature of another image"])
def test_a_missing_or_bad_signature_refuses_the_promotion_with_the_reason(
    pipeline, registry, service, signing_key, kind
):
    require(pipeline, signature=True)
    release = pushed_release(registry, service)
    reason = refusal(registry, release, signing_key, kind)

    promotion = promote(pipeline, release)

    assert promotion.state == PromotionState.FAILED
    assert promotion.failed_step == "image"
    assert reason in promotion.error
    release.refresh_from_db()
    assert release.signed_by == ""
    event = image_events()[-1]
    assert (event.data["verdict"], event.promotion_id) == ("refused", promotion.pk)


def test_the_release_and_promotion_pages_show_who_signed_and_when(
    pipeline, registry, service, signing_key, client, rita
):
    require(pipeline, signature=True)
    release = pushed_release(registry, service)
    registry.sign(REPOSITORY, release.image_digest, signing_key)
    promotion = promote(pipeline, release)
    client.force_login(rita)

    release_page = client.get(release.get_absolute_url()).content.decode()
    promotion_page = client.get(promotion.get_absolute_url()).content.decode()

    signer = fingerprint(signing_key.public_key())
    assert "Cosign signature verified" in release_page
    assert signer in release_page
    assert f'Signed by <code class="small">{signer}</code>' in promotion_page


def test_a_service_refuses_a_signing_key_cosign_would_not_make(environments):
    rsa_pem = public_key_pem_of_rsa()
    service = make_service("nexo-be", signing_public_keys=rsa_pem)

    with pytest.raises(ValidationError, match="not an ECDSA P-256 key"):
        service.full_clean()


def public_key_pem_of_rsa():
    from cryptography.hazmat.primitives import serialization

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def register_a_build(person):
    """nexo-be's build registered through the API by `person`: the answer."""
    client = APIClient()
    client.force_login(person)
    return client.post(
        "/api/v1/releases/",
        {
            "service": "nexo-be",
            "commit_sha": "a3f2b1c" + "0" * 33,
            "committed_at": "2026-02-03T10:00:00Z",
            "image_digest": "sha256:" + "b" * 64,
        },
        format="json",
    )


def test_the_registration_answer_says_what_each_environment_requires_of_the_image(environments, rita):
    make_service("nexo-be", team="backend-team")
    environments["staging"].requires_image_check = True
    environments["staging"].save()
    environments["production"].requires_image_check = environments["production"].requires_signature = True
    environments["production"].save()

    answer = register_a_build(rita)

    assert answer.status_code == 201, answer.json()
    assert answer.json()["image_requirements"] == {
        "staging": ["digest and tags checked in the registry"],
        "production": ["digest and tags checked in the registry", "a Cosign signature by the service's key"],
    }
