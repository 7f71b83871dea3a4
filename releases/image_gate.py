"""Before a promotion's GitOps commit: the image it deploys is in the registry as CI said, and signed.

What an environment requires (`requires_image_check`, `requires_signature`, `requires_attestation`)
is asked of the registry (releases/registry.py, releases/signatures.py, releases/attestations.py) by
the commit step, before anything is written. The result is kept on the release (when it was checked,
the key that signed, the identity that attested, when) and audited (`release.image_checked`, with
each tag's digest); a refusal fails the promotion at the step "image" with the reason, and a registry
out of reach is tried again like any transient error.
"""

from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from audit import log as audit
from audit.models import AuditAction
from environments.models import Environment
from nexo_portal.lib.errors import Refused

from . import attestations, registry, signatures


class ImageRefused(Refused):
    """The image is not what the environment requires; the message says what is wrong."""


def requirements(environment):
    """What `environment` requires of an image, in words (empty: nothing).

    GitOps deploys the version's tag, not the digest: a signature or an attestation of the digest
    says nothing of an image the tag names instead, so requiring either checks the tags too."""
    required = []
    if environment.requires_image_check or environment.requires_signature or environment.requires_attestation:
        required.append("digest and tags checked in the registry")
    if environment.requires_signature:
        required.append("a Cosign signature by the service's key")
    if environment.requires_attestation:
        required.append("a Sigstore attestation by the service's workflow identity")
    return required


def requirements_by_environment(environments=None):
    """{environment: what it requires}, for the environments that require anything, in pipeline order.

    `environments`: all of them, in pipeline order, when the caller has read them already.
    """
    if environments is None:
        environments = Environment.objects.filter(
            Q(requires_image_check=True) | Q(requires_signature=True) | Q(requires_attestation=True)
        )
        environments = environments.order_by("position")
    return {environment.name: required for environment in environments if (required := requirements(environment))}


def check(promotion):
    """Ask the registry what `promotion.environment` requires of its image; ImageRefused if it is not so.

    registry.RegistryUnavailable (transient) goes up to the step, which tries again.
    """
    release, environment = promotion.release, promotion.environment
    if not requirements(environment):
        return None
    client = registry.RegistryClient.for_repository(release.service.image_repository)
    result = {"digest": release.image_digest, "required": requirements(environment)}
    try:
        if not release.image_digest:
            raise registry.ImageMismatch(f"{release.version} has no image digest to check.")
        result["tags"] = registry.check_tags(client, release.image_digest, release.tags())
        if environment.requires_signature:
            result["signed_by"] = signatures.verify(client, release.image_digest, release.service.signing_public_keys)
        if environment.requires_attestation:
            service = release.service
            result["attested_by"] = attestations.verify(
                client, release.image_digest, service.attestation_identity, service.attestation_issuer
            )
    except (
        registry.ImageMismatch,
        registry.RegistryError,
        signatures.SignatureRefused,
        attestations.AttestationRefused,
    ) as error:
        _record(promotion, {**result, "verdict": "refused", "reason": str(error)}, f"refused: {error}")
        raise ImageRefused(str(error)) from error
    now = timezone.now()
    release.image_checked_at = now
    fields = ["image_checked_at"]
    if "signed_by" in result:
        release.signed_by, release.signature_verified_at = result["signed_by"], now
        fields += ["signed_by", "signature_verified_at"]
    if "attested_by" in result:
        attested, logged_at = result["attested_by"], result["attested_by"]["logged_at"]
        release.attested_by, release.attestation_claims = attested["identity"], attested["claims"]
        release.attested_at = datetime.fromisoformat(logged_at) if logged_at else None
        release.attestation_verified_at = now
        fields += ["attested_by", "attestation_claims", "attested_at", "attestation_verified_at"]
    with audit.chain_transaction():
        release.save(update_fields=fields)
        _record(promotion, {**result, "verdict": "passed"}, "passed: " + ", ".join(result["required"]))
    return result


def _record(promotion, data, outcome):
    release = promotion.release
    audit.record(
        AuditAction.IMAGE_CHECKED,
        service=release.service.name,
        environment=promotion.environment.name,
        version=release.version,
        promotion=promotion,
        message=f"Image of {release.service.name} {release.version} for {promotion.environment.name} {outcome}",
        data=data,
    )
