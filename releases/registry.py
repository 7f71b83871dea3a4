"""Ask the image registry, through the OCI distribution API, whether a release's image is what CI said.

Before a promotion into an environment that requires it (`Environment.requires_image_check`), the
commit step asks the registry that the release's digest exists and that every tag the portal gave
CI for that version (`Release.tags()`) points to that digest. A registry that answers 401 with
`WWW-Authenticate: Bearer realm=…,service=…,scope=…` is asked for a token at its realm (the
distribution "token authentication" flow, with REGISTRY_CREDENTIALS for that host if set), and a
`Basic` challenge gets the credentials directly.

Errors come in two kinds: `ImageMismatch` (the registry answered, and the image is not what CI
said: the promotion is refused with which tag points where) and `RegistryUnavailable` (no answer,
5xx, 408 or 429: the step is tried again).
"""

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from django.conf import settings

from nexo_portal.lib import metrics
from nexo_portal.lib.errors import Unavailable
from nexo_portal.lib.http import describe_failure, excerpt

TIMEOUT_SECONDS = 10
# What the portal reads: a single image or a multi-platform index, OCI's or Docker's.
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
DOCKER_HUB = "registry-1.docker.io"
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(Exception):
    """The registry refused the portal (401 after the token flow, 403, other 4xx) or answered nonsense."""


# Besides every 5xx: a request timeout, and a rate limit (Docker Hub's pull limit, 429 TOOMANYREQUESTS).
TRANSIENT_STATUSES = frozenset({408, 429})


def _is_transient(status):
    return status >= 500 or status in TRANSIENT_STATUSES


class RegistryUnavailable(Unavailable):
    """No answer, or a 5xx: asked again with backoff."""


class ImageMismatch(Exception):
    """The registry answered, and the image is not what CI registered: the message says how."""


@dataclass
class ImageReference:
    host: str
    repository: str

    @classmethod
    def parse(cls, image_repository):
        """`ghcr.io/nexo-org/nexo-be` → (ghcr.io, nexo-org/nexo-be); Docker Hub's short names too."""
        first, _, rest = image_repository.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            return cls(first, rest)
        repository = image_repository if rest else f"library/{image_repository}"
        return cls(DOCKER_HUB, repository)


@dataclass
class Manifest:
    digest: str
    media_type: str
    body: bytes = b""

    def json(self):
        return json.loads(self.body)


@dataclass
class RegistryClient:
    """One repository of one registry, with the bearer token it was given (kept for its calls)."""

    reference: ImageReference
    session: requests.Session = field(default_factory=requests.Session)
    _authorization: str = ""

    @classmethod
    def for_repository(cls, image_repository):
        return cls(ImageReference.parse(image_repository))

    @property
    def base_url(self):
        scheme = "http" if self.reference.host in settings.REGISTRY_INSECURE_HOSTS else "https"
        return f"{scheme}://{self.reference.host}/v2/{self.reference.repository}"

    def _credentials(self):
        value = settings.REGISTRY_CREDENTIALS.get(self.reference.host, "")
        username, _, password = value.partition(":")
        return (username, password) if value else None

    def _send(self, method, url, **kwargs):
        headers = {**kwargs.pop("headers", {})}
        if self._authorization:
            headers["Authorization"] = self._authorization
        try:
            with metrics.outgoing_call("registry", method) as call:
                response = self.session.request(method, url, headers=headers, timeout=TIMEOUT_SECONDS, **kwargs)
                call.status = response.status_code
            return response
        except requests.RequestException as error:
            raise RegistryUnavailable(
                f"The registry {self.reference.host} did not answer: {describe_failure(error, TIMEOUT_SECONDS)}."
            ) from error

    def request(self, method, path, **kwargs):
        """A call to the repository's API, through the registry's authentication challenge if it makes one."""
        url = f"{self.base_url}/{path}"
        response = self._send(method, url, **kwargs)
        if response.status_code == 401 and "WWW-Authenticate" in response.headers:
            self._answer_challenge(response.headers["WWW-Authenticate"])
            response = self._send(method, url, **kwargs)
        if _is_transient(response.status_code):
            retry = response.headers.get("Retry-After")
            raise RegistryUnavailable(
                f"The registry {self.reference.host} answered {response.status_code}"
                + (f" (Retry-After: {retry})" if retry else "")
                + "."
            )
        if response.status_code in (401, 403):
            raise RegistryError(
                f"The registry {self.reference.host} refused the portal ({response.status_code}) for "
                f"{self.reference.repository}: set REGISTRY_CREDENTIALS for {self.reference.host} to an "
                "account that may pull it."
            )
        return response

    def _answer_challenge(self, challenge):
        scheme, _, params = challenge.partition(" ")
        values = dict(_CHALLENGE_PARAM.findall(params))
        credentials = self._credentials()
        if scheme.lower() == "basic":
            if credentials is None:
                raise RegistryError(
                    f"The registry {self.reference.host} asks for a password: set REGISTRY_CREDENTIALS for it."
                )
            self._authorization = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
            return
        if scheme.lower() != "bearer" or "realm" not in values:
            raise RegistryError(f"The registry {self.reference.host} asks for an unknown authentication: {challenge}")
        realm = urlsplit(values["realm"])
        same_host = realm.hostname == urlsplit(f"//{self.reference.host}").hostname
        if credentials is not None and realm.scheme != "https" and not same_host:
            # The registry's password goes only where TLS protects it, or to the registry's own host.
            raise RegistryError(
                f"The registry {self.reference.host} sends the portal to a token service over plain HTTP on "
                f"another host ({values['realm']}); its credentials are not sent there."
            )
        query = {"service": values.get("service", "")}
        query["scope"] = values.get("scope") or f"repository:{self.reference.repository}:pull"
        try:
            with metrics.outgoing_call("registry", "GET token") as call:
                answer = self.session.get(values["realm"], params=query, auth=credentials, timeout=TIMEOUT_SECONDS)
                call.status = answer.status_code
        except requests.RequestException as error:
            raise RegistryUnavailable(
                f"The token service of {self.reference.host} ({values['realm']}) did not answer: "
                f"{describe_failure(error, TIMEOUT_SECONDS)}."
            ) from error
        if _is_transient(answer.status_code):
            raise RegistryUnavailable(f"The token service of {self.reference.host} answered {answer.status_code}.")
        if answer.status_code != 200:
            raise RegistryError(
                f"The token service of {self.reference.host} refused the portal ({answer.status_code}): "
                f"{excerpt(answer.text)}"
            )
        try:
            body = answer.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError) as error:
            raise RegistryError(f"The token service of {self.reference.host} answered no token.") from error
        if not token:
            raise RegistryError(f"The token service of {self.reference.host} answered no token.")
        self._authorization = f"Bearer {token}"

    def manifest(self, reference, *, media_types=MANIFEST_TYPES):
        """The manifest at a tag or digest, with the digest the registry gives it; None when there is none."""
        response = self.request("GET", f"manifests/{reference}", headers={"Accept": ", ".join(media_types)})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RegistryError(
                f"The registry {self.reference.host} answered {response.status_code} for the manifest "
                f"{reference}: {excerpt(response.text)}"
            )
        # The digest of what came back, not the header's word for it: that is what the digest means.
        digest = "sha256:" + hashlib.sha256(response.content).hexdigest()
        return Manifest(digest=digest, media_type=response.headers.get("Content-Type", ""), body=response.content)

    def blob(self, digest):
        response = self.request("GET", f"blobs/{digest}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RegistryError(f"The registry {self.reference.host} answered {response.status_code} for {digest}.")
        return response.content

    def referrers(self, digest, artifact_type):
        """The descriptors of the manifests whose `subject` is `digest` and whose artifactType is `artifact_type`.

        OCI distribution v1.1: the referrers API (`GET /v2/<name>/referrers/<digest>`, an image index);
        a registry without it answers 404, and the pusher then keeps the same index under the tag
        `<alg>-<hex>` (the "referrers tag schema"), which is read instead. A filter the registry did
        not apply (no `OCI-Filters-Applied` header) is applied here.
        """
        response = self.request(
            "GET",
            f"referrers/{digest}",
            params={"artifactType": artifact_type},
            headers={"Accept": INDEX_TYPE},
        )
        if response.status_code == 200 and response.headers.get("Content-Type", "").startswith(INDEX_TYPE):
            index = _json_object(response.content, f"the referrers of {digest}", self.reference.host)
        elif response.status_code in (200, 404):
            manifest = self.manifest(digest.replace(":", "-"), media_types=(INDEX_TYPE,))
            index = (
                _json_object(manifest.body, f"the referrers tag of {digest}", self.reference.host) if manifest else {}
            )
        else:
            raise RegistryError(
                f"The registry {self.reference.host} answered {response.status_code} for the referrers of {digest}: "
                f"{excerpt(response.text)}"
            )
        manifests = index.get("manifests") or []
        return [entry for entry in manifests if isinstance(entry, dict) and entry.get("artifactType") == artifact_type]


def _json_object(body, what, host):
    try:
        value = json.loads(body)
    except ValueError as error:
        raise RegistryError(f"The registry {host} answered {what} with something that is not JSON.") from error
    if not isinstance(value, dict):
        raise RegistryError(f"The registry {host} answered {what} with something that is not an image index.")
    return value


def check_tags(client, digest, tags):
    """Refuse (ImageMismatch) unless `digest` exists and every tag points to it; returns what was found."""
    image = client.manifest(digest)
    where = f"{client.reference.host}/{client.reference.repository}"
    if image is None:
        raise ImageMismatch(f"The image {where}@{digest} does not exist in the registry.")
    found = {}
    for tag in tags:
        manifest = client.manifest(tag)
        found[tag] = manifest.digest if manifest else None
    wrong = [
        f"{tag} points to {points_to}" if points_to else f"{tag} does not exist"
        for tag, points_to in found.items()
        if points_to != digest
    ]
    if wrong:
        raise ImageMismatch(f"The tags of {where} do not all point to {digest}: {'; '.join(wrong)}.")
    return found
