"""A Sigstore instance of the tests' own: a Fulcio CA, a certificate transparency log and a Rekor log,
whose keys make a `trusted_root.json` that the `sigstore` library's Verifier accepts, and that issue
bundles in the exact format GitHub's `actions/attest-build-provenance` pushes to a registry.

What each part signs follows the specifications the Verifier checks, so that nothing is faked:
- Fulcio (sigstore/fulcio, "Certificate specification"): a short-lived leaf certificate for an
  ephemeral P-256 key, empty subject, the identity as a critical URI SAN, key usage digitalSignature,
  extended key usage codeSigning, the OIDC issuer in 1.3.6.1.4.1.57264.1.1 (raw) and .1.8 (DER
  UTF8String), GitHub's workflow claims (raw in .1.2-.1.6, DER from .1.12 on), one embedded SCT.
- The CT log (RFC 6962 §3.2): the SCT signs the precertificate's TBSCertificate (the certificate
  without its SCT extension) with the issuer's key hash.
- Rekor (sigstore/rekor, types/dsse v0.0.1): the entry's canonical body names the payload's hash and
  the envelope's signature with the PEM certificate; its inclusion promise signs the RFC 8785 JSON of
  {body, integratedTime, logID, logIndex}; its inclusion proof leads to a root hash in a checkpoint
  signed in the transparency-dev "signed note" format.
- DSSE (secure-systems-lab/dsse, "Protocol"): the leaf key signs PAE(payloadType, payload), the
  payload being an in-toto Statement v1 about the image digest.
"""

import base64
import datetime
import hashlib
import json
import struct

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO = "application/vnd.in-toto+json"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
SCT_LIST_OID = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
ISSUER_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
ISSUER_V2_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")


def b64(data):
    return base64.b64encode(data).decode()


def spki(key):
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(key):
    return hashlib.sha256(spki(key)).digest()


def der(tag, data):
    if len(data) < 128:
        return bytes([tag, len(data)]) + data
    length = len(data).to_bytes((len(data).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + data


def der_utf8(text):
    return der(0x0C, text.encode())


def der_octet_string(data):
    return der(0x04, data)


def u24(data):
    return len(data).to_bytes(3, "big") + data


def u16(data):
    return len(data).to_bytes(2, "big") + data


def pae(payload_type, payload):
    """DSSE's pre-authentication encoding."""
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)


def in_toto_statement(digests, name="ghcr.io/nexo-org/nexo-be"):
    """An in-toto Statement v1 with SLSA provenance about the images `digests` (sha256:<hex>), as
    actions/attest-build-provenance writes it."""
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": name, "digest": {"sha256": digest.removeprefix("sha256:")}} for digest in digests],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {"buildType": "https://actions.github.io/buildtypes/workflow/v1"},
            "runDetails": {"builder": {"id": "https://github.com/actions/runner/github-hosted"}},
        },
    }


class SigstoreInstance:
    """Fulcio, a CT log and Rekor with keys of their own; `trusted_root()` names them all."""

    def __init__(self, name="nexo-test"):
        self.name = name
        self.now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        self.fulcio_key = ec.generate_private_key(ec.SECP384R1())
        self.ct_key = ec.generate_private_key(ec.SECP256R1())
        self.rekor_key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"{name}.sigstore"),
                x509.NameAttribute(NameOID.COMMON_NAME, "sigstore"),
            ]
        )
        public = self.fulcio_key.public_key()
        self.fulcio_certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - datetime.timedelta(days=30))
            .not_valid_after(self.now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
            .sign(self.fulcio_key, hashes.SHA384())
        )

    # --- the trust root ---------------------------------------------------------------------------

    def _log(self, url, key):
        return {
            "baseUrl": url,
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": b64(spki(key.public_key())),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": (self.now - datetime.timedelta(days=30)).isoformat().replace("+00:00", "Z")},
            },
            "logId": {"keyId": b64(key_id(key.public_key()))},
        }

    def trusted_root(self):
        """The `trusted_root.json` (dev.sigstore.trustedroot v0.1) that trusts this instance."""
        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [self._log(f"https://rekor.{self.name}.example", self.rekor_key)],
            "certificateAuthorities": [
                {
                    "subject": {"organization": f"{self.name}.sigstore", "commonName": "sigstore"},
                    "uri": f"https://fulcio.{self.name}.example",
                    "certChain": {
                        "certificates": [
                            {"rawBytes": b64(self.fulcio_certificate.public_bytes(serialization.Encoding.DER))}
                        ]
                    },
                    "validFor": {"start": (self.now - datetime.timedelta(days=30)).isoformat().replace("+00:00", "Z")},
                }
            ],
            "ctlogs": [self._log(f"https://ctfe.{self.name}.example", self.ct_key)],
            "timestampAuthorities": [],
        }

    # --- Fulcio and the CT log ----------------------------------------------------------------------

    def _leaf(self, signing_key, identity, issuer, claims, issued_at):
        public = signing_key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.fulcio_certificate.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(issued_at)
            .not_valid_after(issued_at + datetime.timedelta(minutes=10))
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.fulcio_key.public_key()), critical=False
            )
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=True)
            .add_extension(x509.UnrecognizedExtension(ISSUER_OID, issuer.encode()), critical=False)
            .add_extension(x509.UnrecognizedExtension(ISSUER_V2_OID, der_utf8(issuer)), critical=False)
        )
        for oid, value in claims.items():
            # Fulcio's first extensions (.1.1-.1.6) hold the raw string, the later ones a DER UTF8String.
            encoded = value.encode() if int(oid.rsplit(".", 1)[1]) <= 7 else der_utf8(value)
            builder = builder.add_extension(x509.UnrecognizedExtension(ObjectIdentifier(oid), encoded), critical=False)
        # The precertificate is the certificate without its SCT list: what the CT log signs.
        precertificate = builder.sign(self.fulcio_key, hashes.SHA384())
        timestamp = int(issued_at.timestamp() * 1000)
        signed = (
            struct.pack("!BBQH", 0, 0, timestamp, 1)  # v1, certificate_timestamp, time, precert_entry
            + key_id(self.fulcio_key.public_key())
            + u24(precertificate.tbs_certificate_bytes)
            + u16(b"")
        )
        signature = self.ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        sct = (
            struct.pack("!B", 0)
            + key_id(self.ct_key.public_key())
            + struct.pack("!Q", timestamp)
            + u16(b"")
            + struct.pack("!BB", 4, 3)  # sha256, ecdsa
            + u16(signature)
        )
        extension = x509.UnrecognizedExtension(SCT_LIST_OID, der_octet_string(u16(u16(sct))))
        certificate = builder.add_extension(extension, critical=False).sign(self.fulcio_key, hashes.SHA384())
        assert certificate.tbs_precertificate_bytes == precertificate.tbs_certificate_bytes
        return certificate

    # --- Rekor -----------------------------------------------------------------------------------

    def _log_entry(self, certificate, payload, envelope_json, signature, integrated_time, log_index=1):
        pem = certificate.public_bytes(serialization.Encoding.PEM)
        body = json.dumps(
            {
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {
                    "envelopeHash": {"algorithm": "sha256", "value": hashlib.sha256(envelope_json).hexdigest()},
                    "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
                    "signatures": [{"signature": b64(signature), "verifier": b64(pem)}],
                },
            },
            separators=(",", ":"),
        ).encode()
        log_id = key_id(self.rekor_key.public_key())
        promise = rfc8785.dumps(
            {"body": b64(body), "integratedTime": integrated_time, "logID": log_id.hex(), "logIndex": log_index}
        )
        # A tree of two leaves: another entry, then this one; its proof is the other leaf's hash.
        other = hashlib.sha256(b"\x00" + b"an earlier entry").digest()
        leaf = hashlib.sha256(b"\x00" + body).digest()
        root = hashlib.sha256(b"\x01" + other + leaf).digest()
        origin = f"rekor.{self.name}.example - 1"
        note = f"{origin}\n2\n{b64(root)}\n"
        note_signature = self.rekor_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        checkpoint = f"{note}\n\u2014 rekor.{self.name}.example {b64(log_id[:4] + note_signature)}\n"
        return {
            "logIndex": str(log_index),
            "logId": {"keyId": b64(log_id)},
            "kindVersion": {"kind": "dsse", "version": "0.0.1"},
            "integratedTime": str(integrated_time),
            "inclusionPromise": {"signedEntryTimestamp": b64(self.rekor_key.sign(promise, ec.ECDSA(hashes.SHA256())))},
            "inclusionProof": {
                "logIndex": str(log_index),
                "rootHash": b64(root),
                "treeSize": "2",
                "hashes": [b64(other)],
                "checkpoint": {"envelope": checkpoint},
            },
            "canonicalizedBody": b64(body),
        }

    # --- what CI does ----------------------------------------------------------------------------

    def attest(self, statement, *, identity, issuer=GITHUB_ISSUER, claims=None, at=None):
        """A Sigstore bundle v0.3 (as JSON bytes) of a DSSE envelope holding `statement`, signed by a
        Fulcio certificate for `identity` from `issuer`, logged in Rekor at `at` (default: now)."""
        at = at or datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        signing_key = ec.generate_private_key(ec.SECP256R1())
        certificate = self._leaf(signing_key, identity, issuer, claims or {}, at - datetime.timedelta(seconds=5))
        payload = json.dumps(statement, separators=(",", ":")).encode()
        signature = signing_key.sign(pae(IN_TOTO, payload), ec.ECDSA(hashes.SHA256()))
        envelope = {"payload": b64(payload), "payloadType": IN_TOTO, "signatures": [{"sig": b64(signature)}]}
        envelope_json = json.dumps(envelope, separators=(",", ":")).encode()
        entry = self._log_entry(certificate, payload, envelope_json, signature, int(at.timestamp()))
        bundle = {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {
                "certificate": {"rawBytes": b64(certificate.public_bytes(serialization.Encoding.DER))},
                "tlogEntries": [entry],
                "timestampVerificationData": {},
            },
            "dsseEnvelope": envelope,
        }
        return json.dumps(bundle).encode()


def github_identity(repository="nexo-org/nexo-be", workflow="build.yml", ref="refs/heads/main"):
    """The certificate identity GitHub's OIDC token gives a workflow run (its job_workflow_ref as a URL)."""
    return f"https://github.com/{repository}/.github/workflows/{workflow}@{ref}"


def github_claims(repository="nexo-org/nexo-be", ref="refs/heads/main", sha="a3f2b1c" + "0" * 33, run=4711):
    """The extensions Fulcio writes from a GitHub Actions token (sigstore/fulcio docs/oid-info.md): the
    deprecated raw ones (.1.2-.1.6) and their DER-encoded successors, as its certificates carry both."""
    return {
        "1.3.6.1.4.1.57264.1.2": "push",
        "1.3.6.1.4.1.57264.1.3": sha,
        "1.3.6.1.4.1.57264.1.4": "build",
        "1.3.6.1.4.1.57264.1.5": repository,
        "1.3.6.1.4.1.57264.1.6": ref,
        "1.3.6.1.4.1.57264.1.12": f"https://github.com/{repository}",
        "1.3.6.1.4.1.57264.1.13": sha,
        "1.3.6.1.4.1.57264.1.14": ref,
        "1.3.6.1.4.1.57264.1.18": f"https://github.com/{repository}/.github/workflows/build.yml@{ref}",
        "1.3.6.1.4.1.57264.1.20": "push",
        "1.3.6.1.4.1.57264.1.21": f"https://github.com/{repository}/actions/runs/{run}/attempts/1",
    }
