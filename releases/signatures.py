"""Verify a Cosign signature of an image digest with the service's public keys, as `cosign verify --key` does.

Cosign's keyed format (sigstore/cosign, "Signature Specification"): the signature of the image
`sha256:<hex>` is the manifest tagged `sha256-<hex>.sig` in the same repository; each of its
layers of type `application/vnd.dev.cosign.simplesigning.v1+json` is a "simple signing" payload
naming the digest (`critical.image.docker-manifest-digest`), and the layer's annotation
`dev.cosignproject.cosign/signature` holds the base64 of its ECDSA P-256 / SHA-256 signature.

Keyless signatures here (Fulcio certificates, Rekor bundles) do not count as signed by a configured
key; keyless Sigstore attestations and GitHub artifact attestations are releases/attestations.py's,
where an environment requires one (`requires_attestation`).
"""

import base64
import binascii
import hashlib
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_TYPE = "cosign container image signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


class SignatureRefused(Exception):
    """No valid signature by a configured key; the message says what was found instead."""


class InvalidPublicKey(ValueError):
    pass


def signature_tag(digest):
    """`sha256:abc…` → `sha256-abc….sig`, where Cosign stores the signature."""
    return digest.replace(":", "-") + ".sig"


def fingerprint(public_key):
    """The key's name in the audit log and on the release: SHA-256 of its DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def load_public_keys(text):
    """The ECDSA P-256 public keys in `text` (PEM blocks, as cosign.pub), or InvalidPublicKey with the reason."""
    keys = []
    blocks = [block for block in (text or "").split("-----END PUBLIC KEY-----") if "-----BEGIN" in block]
    for number, block in enumerate(blocks, start=1):
        pem = block.strip() + "\n-----END PUBLIC KEY-----\n"
        try:
            key = serialization.load_pem_public_key(pem.encode())
        except ValueError as error:
            raise InvalidPublicKey(f"Key {number} is not a PEM public key: {error}") from error
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise InvalidPublicKey(
                f"Key {number} is not an ECDSA P-256 key, the kind `cosign generate-key-pair` makes."
            )
        keys.append(key)
    return keys


def verify(client, digest, public_keys_text):
    """The fingerprint of the configured key whose Cosign signature of `digest` verifies; else SignatureRefused."""
    try:
        keys = load_public_keys(public_keys_text)
    except InvalidPublicKey as error:
        raise SignatureRefused(f"The service's signing keys cannot be read: {error}") from error
    if not keys:
        raise SignatureRefused("The service has no signing public key configured; add its cosign.pub in the admin.")
    tag = signature_tag(digest)
    manifest = client.manifest(tag, media_types=(OCI_MANIFEST, DOCKER_MANIFEST))
    if manifest is None:
        raise SignatureRefused(f"{digest} is not signed: the registry has no Cosign signature ({tag}).")
    try:
        layers = manifest.json().get("layers") or []
    except (ValueError, AttributeError):  # not JSON, or not a JSON object
        layers = None
    if not isinstance(layers, list):
        raise SignatureRefused(f"The Cosign signature manifest {tag} is not an image manifest with layers.")
    problems = []
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("mediaType") != SIMPLE_SIGNING:
            continue
        signer, problem = _verify_layer(client, digest, layer, keys)
        if signer:
            return signer
        problems.append(problem)
    if not problems:
        raise SignatureRefused(f"The Cosign signature manifest {tag} holds no simple-signing payload.")
    raise SignatureRefused(f"No valid signature of {digest} by the service's keys: {'; '.join(problems)}.")


def _verify_layer(client, digest, layer, keys):
    """(fingerprint, "") for a layer signed by one of `keys` naming `digest`; (None, the reason) otherwise."""
    annotations = layer.get("annotations")
    encoded = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
    if not encoded or not isinstance(encoded, str):
        return None, "a payload without a signature annotation"
    try:
        signature = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None, "a signature annotation that is not base64"
    if not isinstance(layer.get("digest"), str):
        return None, "a payload layer without a digest"
    payload = client.blob(layer["digest"])
    if payload is None or "sha256:" + hashlib.sha256(payload).hexdigest() != layer.get("digest"):
        return None, f"a payload missing from the registry or not matching its digest ({layer.get('digest')})"
    signer = None
    for key in keys:
        try:
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            continue
        signer = fingerprint(key)
        break
    if signer is None:
        return None, "a signature made by none of the service's keys"
    try:
        critical = json.loads(payload)["critical"]
        signed_type, signed_digest = critical["type"], critical["image"]["docker-manifest-digest"]
    except (ValueError, KeyError, TypeError):
        return None, f"a payload signed by {signer} that is not a simple-signing document"
    if signed_type != PAYLOAD_TYPE:
        return None, f"a payload signed by {signer} of another type ({signed_type})"
    if signed_digest != digest:
        return None, f"a payload signed by {signer} that names another image ({signed_digest})"
    return signer, ""
