"""A real image registry for the tests: Debian's `docker-registry` (the CNCF distribution server),
started on a free port with its own configuration, behind its token authentication.

The registry answers 401 with `WWW-Authenticate: Bearer realm=…,service=…,scope=…`; the token
service is a small server here that speaks distribution's token protocol ("Token Authentication
Specification" and "Token Authentication Implementation"): HTTP basic credentials in, a JWT out,
signed RS256 by a key whose self-signed certificate is the registry's `rootcertbundle` and named in
the token's `x5c` header. Images are pushed with plain HTTP calls of the distribution API: a blob
upload (POST, then PUT with the digest) and a manifest PUT; no Docker daemon.
"""

import base64
import datetime
import hashlib
import json
import secrets
import shutil
import socket
import subprocess
import time

import jwt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.servers.loopback import LoopbackServer, Response

REGISTRY_BINARY = "/usr/bin/docker-registry"
SERVICE = "nexo-test-registry"
ISSUER = "nexo-test-token-issuer"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
SIGSTORE_BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class TokenService:
    """Issues registry tokens to known accounts: `users` maps user → (password, actions allowed)."""

    def __init__(self, users):
        self.users = users
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.requests = []  # (user, scope) of every token asked for
        self._server = LoopbackServer(self._respond)
        self.realm = f"{self._server.url}/token"

    def close(self):
        self._server.close()

    def certificate_pem(self):
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def _respond(self, request):
        if request.path != "/token":
            return Response.json(404, {"errors": [{"code": "NOT_FOUND"}]})
        user = None
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith("Basic "):
            name, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            if name not in self.users or self.users[name][0] != password:
                return Response.json(401, {"details": "incorrect username or password"})
            user = name
        scope = (request.query.get("scope") or [""])[0]
        self.requests.append((user, scope))
        allowed = self.users[user][1] if user else set()
        access = []
        if scope:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a in allowed]})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        x5c = base64.b64encode(self.certificate.public_bytes(serialization.Encoding.DER)).decode()
        token = jwt.encode(claims, self.key, algorithm="RS256", headers={"x5c": [x5c]})
        return Response.json(200, {"token": token, "access_token": token, "expires_in": 300})


class Registry:
    """docker-registry on a free port, its data in `directory`, its tokens from `TokenService`."""

    def __init__(self, directory, users):
        self.directory = directory
        self.tokens = TokenService(users)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        (directory / "root.crt").write_bytes(self.tokens.certificate_pem())
        config = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(directory / "data")}, "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
            "auth": {
                "token": {
                    "realm": self.tokens.realm,
                    "service": SERVICE,
                    "issuer": ISSUER,
                    "rootcertbundle": str(directory / "root.crt"),
                }
            },
        }
        (directory / "config.yml").write_text(json.dumps(config))  # JSON is YAML
        self.log = open(directory / "registry.log", "wb")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(directory / "config.yml")], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(f"{self.url}/v2/", timeout=1).status_code in (200, 401):
                    break
            except requests.ConnectionError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"docker-registry did not start: {(directory / 'registry.log').read_text()}")
            time.sleep(0.1)

    def close(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
        self.tokens.close()
        shutil.rmtree(self.directory / "data", ignore_errors=True)

    # --- pushing, as CI does (user ci may push) -----------------------------------------------------

    def _session(self, repository, user="ci"):
        password = self.tokens.users[user][0]
        answer = requests.get(
            self.tokens.realm,
            params={"service": SERVICE, "scope": f"repository:{repository}:pull,push"},
            auth=(user, password),
            timeout=10,
        )
        answer.raise_for_status()
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {answer.json()['token']}"
        return session

    def push_blob(self, repository, data):
        session = self._session(repository)
        digest = sha256_digest(data)
        started = session.post(f"{self.url}/v2/{repository}/blobs/uploads/", timeout=10)
        assert started.status_code == 202, started.text
        location = started.headers["Location"]
        if location.startswith("/"):
            location = self.url + location
        separator = "&" if "?" in location else "?"
        done = session.put(
            f"{location}{separator}digest={digest}",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=10,
        )
        assert done.status_code == 201, done.text
        return digest

    def push_manifest(self, repository, reference, manifest):
        body = json.dumps(manifest).encode()
        answer = self._session(repository).put(
            f"{self.url}/v2/{repository}/manifests/{reference}",
            data=body,
            headers={"Content-Type": manifest["mediaType"]},
            timeout=10,
        )
        assert answer.status_code == 201, answer.text
        return sha256_digest(body)

    def push_image(self, repository, content=None, tags=()):
        """An image (one layer of random bytes, an OCI config): its manifest digest, tagged with `tags`."""
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
        layer = content or secrets.token_bytes(64)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": self.push_blob(repository, config), "size": len(config)},
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": self.push_blob(repository, layer),
                    "size": len(layer),
                }
            ],
        }
        digest = self.push_manifest(repository, digest_reference(manifest), manifest)
        for tag in tags:
            self.push_manifest(repository, tag, manifest)
        return digest

    def sign(self, repository, digest, private_key, *, payload_digest=None, extra_layers=()):
        """A Cosign signature of `digest`, in Cosign's format: the simple-signing payload as a layer of the
        manifest tagged `sha256-<hex>.sig`, its ECDSA signature (base64, DER) in the layer's annotation."""
        payload = simple_signing_payload(f"{self.host}/{repository}", payload_digest or digest)
        signature = private_key.sign(payload, ec.ECDSA(hashes.SHA256()))
        config = json.dumps({"architecture": "", "os": "", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        layers = [
            *extra_layers,
            {
                "mediaType": SIMPLE_SIGNING,
                "digest": self.push_blob(repository, payload),
                "size": len(payload),
                "annotations": {COSIGN_SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()},
            },
        ]
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": self.push_blob(repository, config), "size": len(config)},
            "layers": layers,
        }
        return self.push_manifest(repository, digest.replace(":", "-") + ".sig", manifest)

    def attach_bundle(self, repository, digest, bundle, *, predicate_type="https://slsa.dev/provenance/v1"):
        """A Sigstore bundle attached to the image `digest` as actions/attest-build-provenance (push-to-registry,
        through @sigstore/oci) attaches it: an OCI 1.1 manifest with the bundle as its one layer, the empty
        config, the image as `subject`; and, since distribution 2.8 has no referrers API, the referrers tag
        schema's index under `sha256-<hex>`, listing it (OCI distribution-spec v1.1). Returns its digest."""
        image = requests.get(
            f"{self.url}/v2/{repository}/manifests/{digest}",
            headers={**self._session(repository).headers, "Accept": OCI_MANIFEST},
            timeout=10,
        )
        assert image.status_code == 200, image.text
        annotations = {
            "dev.sigstore.bundle.content": "dsse-envelope",
            "dev.sigstore.bundle.predicateType": predicate_type,
            "org.opencontainers.image.created": "2026-02-03T10:00:00.000Z",
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SIGSTORE_BUNDLE,
            "config": {"mediaType": OCI_EMPTY, "digest": self.push_blob(repository, b"{}"), "size": 2},
            "layers": [
                {"mediaType": SIGSTORE_BUNDLE, "digest": self.push_blob(repository, bundle), "size": len(bundle)}
            ],
            "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(image.content)},
            "annotations": annotations,
        }
        referrer = self.push_manifest(repository, digest_reference(manifest), manifest)
        tag = digest.replace(":", "-")
        listed = self.manifest_json(repository, tag, OCI_INDEX) or {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [],
        }
        listed["manifests"].append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": referrer,
                "size": len(json.dumps(manifest).encode()),
                "artifactType": SIGSTORE_BUNDLE,
                "annotations": annotations,
            }
        )
        self.push_manifest(repository, tag, listed)
        return referrer

    def manifest_json(self, repository, reference, media_type):
        answer = requests.get(
            f"{self.url}/v2/{repository}/manifests/{reference}",
            headers={**self._session(repository).headers, "Accept": media_type},
            timeout=10,
        )
        return answer.json() if answer.status_code == 200 else None


def digest_reference(manifest):
    return sha256_digest(json.dumps(manifest).encode())


def simple_signing_payload(docker_reference, digest):
    """Cosign's payload (sigstore/cosign pkg/cosign/payload, containers' "simple signing" format)."""
    return json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": docker_reference},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        },
        separators=(",", ":"),
    ).encode()


def public_key_pem(private_key):
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
