"""Verify, offline, a keyless Sigstore attestation of an image digest by the service's expected CI identity.

Where it is: GitHub's `actions/attest-build-provenance` (`push-to-registry: true`) and
`cosign attest --new-bundle-format` push the Sigstore bundle as an OCI 1.1 referrer of the image: a
manifest whose `subject` is the image, whose `artifactType` is `application/vnd.dev.sigstore.bundle.v0.3+json`
and whose one layer is the bundle. The registry lists it through the referrers API, or under the
`sha256-<hex>` tag on a registry without that API (releases/registry.py, `RegistryClient.referrers`).

What is verified, by the `sigstore` library with no network (`Verifier.verify_dsse`): the leaf
certificate chains to a Fulcio CA of the trusted root, valid when the transparency log took the entry;
it carries an SCT of a CT log of the root; the Rekor entry's inclusion proof, signed checkpoint and
inclusion promise hold and match the envelope; the DSSE signature is the certificate's key's; the
certificate's identity (SAN) and OIDC issuer are exactly the service's (`policy.Identity`). Then the
in-toto statement must name the image's digest among its subjects.

The trusted root is `SIGSTORE_TRUSTED_ROOT` (a trusted_root.json the operator keeps, e.g. from
`cosign trusted-root create` or Sigstore's TUF repository); blank: the public-good root the library
ships, used offline, never refreshed. Not verified: bundles without a transparency-log entry (GitHub's
attestations for private repositories, timestamped by GitHub's own authority instead of Rekor) and
bundles of a bare message signature rather than an in-toto statement.
"""

import functools
import hashlib
import json
import re
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat import asn1
from django.conf import settings
from sigstore.errors import Error as SigstoreError
from sigstore.models import Bundle, ClientTrustConfig, TrustedRoot
from sigstore.verify import Verifier, policy

from nexo_portal.lib.inert import is_http_url

BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO = "application/vnd.in-toto+json"
GITHUB_ACTIONS_ISSUER = "https://token.actions.githubusercontent.com"
# The job's workflow as Fulcio writes it for GitHub Actions: the job_workflow_ref as a URL, at a ref
# or, for a reusable workflow pinned so, at a commit.
GITHUB_WORKFLOW_IDENTITY = re.compile(
    r"^https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/\.github/workflows/[^/@\s]+\.ya?ml"
    r"@(refs/[^\s]+|[0-9a-f]{40})$"
)
# What the certificate says of the run, kept with the verdict: Fulcio's extensions (sigstore/fulcio,
# docs/oid-info.md), the DER-encoded ones (.1.8 and up) or else their deprecated raw predecessors.
CLAIM_OIDS = {
    "issuer": ("1.3.6.1.4.1.57264.1.8", "1.3.6.1.4.1.57264.1.1"),
    "repository": ("1.3.6.1.4.1.57264.1.12", "1.3.6.1.4.1.57264.1.5"),
    "ref": ("1.3.6.1.4.1.57264.1.14", "1.3.6.1.4.1.57264.1.6"),
    "commit": ("1.3.6.1.4.1.57264.1.13", "1.3.6.1.4.1.57264.1.3"),
    "trigger": ("1.3.6.1.4.1.57264.1.20", "1.3.6.1.4.1.57264.1.2"),
    "build_config": ("1.3.6.1.4.1.57264.1.18", None),
    "run": ("1.3.6.1.4.1.57264.1.21", None),
}
MAX_BUNDLES = 20  # a registry that lists more referrers than that is not read further


class AttestationRefused(Exception):
    """No attestation of the digest verifies for the expected identity; the message says what was found."""


def identity_errors(identity, issuer):
    """{field: message} for an expected identity the gate could never match; empty when it can."""
    errors = {}
    if not is_http_url(issuer) or not issuer.startswith("https://"):
        errors["attestation_issuer"] = "Give the OIDC issuer's https:// URL, e.g. " + GITHUB_ACTIONS_ISSUER + "."
    if identity and issuer == GITHUB_ACTIONS_ISSUER and not GITHUB_WORKFLOW_IDENTITY.match(identity):
        errors["attestation_identity"] = (
            "GitHub Actions signs as its workflow: https://github.com/<org>/<repo>/.github/workflows/<file>.yml"
            "@refs/heads/<branch> (or @refs/tags/<tag>, or @<commit> for a reusable workflow pinned to one)."
        )
    elif identity and not identity.startswith("https://") and "@" not in identity:
        errors["attestation_identity"] = "Give the certificate's identity: a https:// URI or an e-mail address."
    return errors


def trusted_root():
    """The configured trusted root; with none configured, the public-good one the library ships (offline)."""
    path = settings.SIGSTORE_TRUSTED_ROOT
    try:
        return TrustedRoot.from_file(path) if path else _public_good_root()
    except (OSError, ValueError, SigstoreError) as error:
        raise AttestationRefused(
            f"The Sigstore trusted root {path or '(public-good)'} cannot be read: {error}"
        ) from error


@functools.cache
def _public_good_root():
    # Offline, the library's TUF client takes the root it ships (copied once into its cache) and never
    # asks the network; it is the same for the life of the process.
    return ClientTrustConfig.production(offline=True).trusted_root


def verify(client, digest, identity, issuer):
    """What the first attestation of `digest` by `identity` (from `issuer`) says; AttestationRefused otherwise."""
    if not identity:
        raise AttestationRefused(
            "The service has no attestation identity configured; set its workflow identity in the admin."
        )
    referrers = client.referrers(digest, BUNDLE_TYPE)
    if not referrers:
        raise AttestationRefused(
            f"{digest} has no Sigstore attestation in the registry (no referrer of type {BUNDLE_TYPE})."
        )
    verifier = Verifier(trusted_root=trusted_root())
    expected = policy.Identity(identity=identity, issuer=issuer)
    problems = []
    for descriptor in referrers[:MAX_BUNDLES]:
        found, problem = _verify_referrer(client, digest, descriptor, verifier, expected)
        if found:
            return found
        problems.append(problem)
    raise AttestationRefused(
        f"No Sigstore attestation of {digest} verifies for {identity} ({issuer}): {'; '.join(problems)}."
    )


def _verify_referrer(client, digest, descriptor, verifier, expected):
    """(what it says, "") for a referrer holding a valid attestation of `digest`; (None, the reason) otherwise."""
    name = str(descriptor.get("digest", ""))
    manifest = client.manifest(name) if name.startswith("sha256:") else None
    if manifest is None or manifest.digest != name:
        return None, f"the referrer {name} is missing from the registry or does not match its digest"
    try:
        layers = [layer for layer in manifest.json()["layers"] if layer.get("mediaType") == BUNDLE_TYPE]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, f"the referrer {name} is not an image manifest with layers"
    if len(layers) != 1:
        return None, f"the referrer {name} holds {len(layers)} bundles, not one"
    body = client.blob(layers[0].get("digest", ""))
    if body is None or "sha256:" + hashlib.sha256(body).hexdigest() != layers[0].get("digest"):
        return None, f"the bundle of {name} is missing from the registry or does not match its digest"
    try:
        bundle = Bundle.from_json(body)
    except (ValueError, SigstoreError) as error:
        return None, f"the bundle of {name} cannot be read: {error}"
    signer = _identity_of(bundle.signing_certificate)
    try:
        payload_type, payload = verifier.verify_dsse(bundle, expected)
    except (ValueError, SigstoreError) as error:
        return None, f"the bundle {name} (its certificate names {signer}) does not verify: {error}"
    if payload_type != IN_TOTO:
        return None, f"the bundle {name} holds a {payload_type} payload, not an in-toto statement"
    try:
        statement = json.loads(payload)
        subjects = [subject["digest"]["sha256"] for subject in statement["subject"] if "sha256" in subject["digest"]]
    except (ValueError, KeyError, TypeError):
        return None, f"the bundle {name} holds a statement without subjects"
    if digest.removeprefix("sha256:") not in subjects:
        named = ", ".join(f"sha256:{subject}" for subject in subjects) or "no sha256 digest"
        return None, f"the attestation {name} by {signer} is about another image ({named})"
    return _what_it_says(bundle, name, statement), ""


def _identity_of(certificate):
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "(no identity)"
    values = names.get_values_for_type(x509.UniformResourceIdentifier) + names.get_values_for_type(x509.RFC822Name)
    return values[0] if values else "(no identity)"


def _claim(certificate, der_oid, raw_oid):
    """The claim's text, from its DER-encoded extension or else its raw predecessor; "" when neither is there."""
    for oid, is_der in ((der_oid, True), (raw_oid, False)):
        if oid is None:
            continue
        try:
            value = certificate.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value
        except x509.ExtensionNotFound:
            continue
        if not isinstance(value, x509.UnrecognizedExtension):
            continue
        try:
            return asn1.decode_der(str, value.value) if is_der else value.value.decode()
        except ValueError:
            continue
    return ""


def _what_it_says(bundle, referrer, statement):
    certificate = bundle.signing_certificate
    entry = bundle.log_entry._inner
    claims = {
        **{claim: value for claim, oids in CLAIM_OIDS.items() if (value := _claim(certificate, *oids))},
        "predicate_type": str(statement.get("predicateType", "")),
        "bundle": referrer,
        "log_index": entry.log_index,
    }
    return {
        "identity": _identity_of(certificate),
        # Rekor v2 logs without an integrated time: there, the time is a timestamp authority's.
        "logged_at": datetime.fromtimestamp(entry.integrated_time, tz=UTC).isoformat()
        if entry.integrated_time
        else None,
        "claims": claims,
    }
