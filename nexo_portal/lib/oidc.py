"""Verify an OpenID Connect ID token (GitHub Actions') against its issuer: discovery, JWKS, RS256.

The issuer's discovery document names its key set; PyJWT's `PyJWKClient` fetches and caches the
keys, and fetches them again when a token names a key id it does not know (the issuer rotated its
keys), at most once per cooldown. Only RS256 is accepted, whatever the token's header says, so
neither `alg: none` nor an HMAC "signed" with the public key can pass; `iss` and `aud` must be
exactly the configured ones, and `exp`, `nbf` and `iat` are checked with a small leeway.
"""

import logging
import threading
import time
from dataclasses import dataclass

import jwt
import requests

from . import metrics
from .http import describe_failure

ALGORITHM = "RS256"
DISCOVERY_PATH = "/.well-known/openid-configuration"
TIMEOUT_SECONDS = 10
REQUIRED_CLAIMS = ["iss", "aud", "sub", "exp", "nbf", "iat"]
# After the discovery document could not be read, how long requests are answered from that failure (or
# with the keys discovered before) instead of each waiting its own TIMEOUT_SECONDS in turn.
FAILURE_MEMORY_SECONDS = 15

logger = logging.getLogger(__name__)


class IdTokenRefused(Exception):
    """The token is not one the portal trusts; the message says why, for whoever runs the pipeline."""


class IssuerUnavailable(Exception):
    """The issuer's discovery document or keys could not be read: not the token's fault."""


def looks_like_jwt(text):
    """A compact JWS has three base64url parts; the portal's own tokens never contain a dot."""
    return text.count(".") == 2 and text.startswith("eyJ")


# How PyJWT's PyJWKClient says that no published key has the token's kid (its other PyJWKClientErrors
# are about the key set itself).
UNKNOWN_KID = "Unable to find a signing key that matches"


@dataclass
class IssuerSettings:
    issuer: str
    audience: str
    leeway_seconds: int = 30
    cache_seconds: int = 300
    refresh_cooldown_seconds: float = 30


class Verifier:
    """One issuer's verifier: its discovery document and key set, cached for `cache_seconds`."""

    def __init__(self, config):
        self.config = config
        self._lock = threading.Lock()
        self._jwks_client = None
        self._discovered_at = 0.0
        self._failure = None  # (when, the IssuerUnavailable) of the last discovery that failed

    def _keys(self):
        """The key set's client, discovered again once `cache_seconds` have passed. When discovery fails,
        the client discovered before goes on (the keys it names were the issuer's a moment ago) and the
        failure is remembered for FAILURE_MEMORY_SECONDS: the requests waiting for this lock do not each
        spend their own timeout on an issuer that is out of reach."""
        with self._lock:
            now = time.monotonic()
            if self._jwks_client is not None and now - self._discovered_at <= self.config.cache_seconds:
                return self._jwks_client
            if self._failure is not None and now - self._failure[0] < FAILURE_MEMORY_SECONDS:
                if self._jwks_client is not None:
                    return self._jwks_client
                raise IssuerUnavailable(str(self._failure[1]))
            try:
                jwks_uri = self._discover()
            except IssuerUnavailable as failure:
                self._failure = (time.monotonic(), failure)
                if self._jwks_client is None:
                    raise
                logger.warning("%s Going on with the keys it named before.", failure)
                return self._jwks_client
            self._failure = None
            if self._jwks_client is None or self._jwks_client.uri != jwks_uri:
                self._jwks_client = _CountedJWKClient(
                    jwks_uri,
                    lifespan=self.config.cache_seconds,
                    timeout=TIMEOUT_SECONDS,
                    cooldown_duration=self.config.refresh_cooldown_seconds,
                )
            self._discovered_at = time.monotonic()
            return self._jwks_client

    def _discover(self):
        url = self.config.issuer.rstrip("/") + DISCOVERY_PATH
        try:
            with metrics.outgoing_call("oidc", "GET discovery") as call:
                response = requests.get(url, timeout=TIMEOUT_SECONDS)
                call.status = response.status_code
        except requests.RequestException as error:
            raise IssuerUnavailable(
                f"The OIDC issuer's discovery document ({url}) could not be read: "
                f"{describe_failure(error, TIMEOUT_SECONDS)}."
            ) from error
        if response.status_code != 200:
            raise IssuerUnavailable(f"The OIDC issuer's discovery document ({url}) answered {response.status_code}.")
        try:
            document = response.json()
        except ValueError as error:
            raise IssuerUnavailable(f"The OIDC issuer's discovery document ({url}) is not JSON.") from error
        if not isinstance(document, dict) or document.get("issuer") != self.config.issuer:
            # OpenID Connect Discovery 1.0 §4.3: the issuer it names must be the one asked, exactly.
            raise IssuerUnavailable(
                f"The OIDC discovery document at {url} names another issuer ({document.get('issuer')!r}); "
                "check OIDC_ISSUER."
                if isinstance(document, dict)
                else f"The OIDC discovery document at {url} is not a JSON object."
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise IssuerUnavailable(f"The OIDC discovery document at {url} has no http(s) jwks_uri.")
        return jwks_uri

    def verify(self, token):
        """The token's claims, once its signature, issuer, audience and times check; else IdTokenRefused."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise IdTokenRefused(f"The ID token is not a well-formed JWT ({error}).") from error
        if header.get("alg") != ALGORITHM:
            raise IdTokenRefused(
                f"The ID token is signed with {header.get('alg')!r}; only {ALGORITHM} tokens from "
                f"{self.config.issuer} are accepted."
            )
        if not header.get("kid"):
            raise IdTokenRefused("The ID token names no key id (kid); the issuer's tokens always do.")
        client = self._keys()
        try:
            signing_key = client.get_signing_key(header["kid"])
        except jwt.PyJWKClientConnectionError as error:
            raise IssuerUnavailable(f"The OIDC issuer's keys ({client.uri}) could not be read: {error}") from error
        except jwt.PyJWKClientError as error:
            if not str(error).startswith(UNKNOWN_KID):
                # "did not return a JSON object", "did not contain any signing keys": the issuer's trouble.
                raise IssuerUnavailable(f"The OIDC issuer's keys ({client.uri}) are unusable: {error}.") from error
            raise IdTokenRefused(
                f"The ID token was signed with key {header['kid']!r}, which {self.config.issuer} does not publish."
            ) from error
        except (ValueError, jwt.PyJWKSetError) as error:
            # Not JSON (a maintenance page), or a set without one key this portal can use.
            raise IssuerUnavailable(
                f"The OIDC issuer's keys ({client.uri}) are not a usable JSON Web Key Set: {error}."
            ) from error
        try:
            return jwt.decode(
                token,
                signing_key.key,
                algorithms=[ALGORITHM],
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway_seconds,
                options={"require": REQUIRED_CLAIMS, "strict_aud": True},
            )
        except jwt.InvalidAudienceError as error:
            raise IdTokenRefused(
                f"The ID token's audience is not {self.config.audience!r}: request it with that audience "
                "(core.getIDToken(audience) or ACTIONS_ID_TOKEN_REQUEST_URL&audience=…)."
            ) from error
        except jwt.InvalidIssuerError as error:
            raise IdTokenRefused(f"The ID token was not issued by {self.config.issuer}.") from error
        except jwt.ExpiredSignatureError as error:
            raise IdTokenRefused("The ID token has expired; request a new one right before the call.") from error
        except jwt.ImmatureSignatureError as error:
            raise IdTokenRefused("The ID token is not valid yet (nbf or iat is in the future).") from error
        except jwt.InvalidSignatureError as error:
            raise IdTokenRefused("The ID token's signature does not verify with the issuer's key.") from error
        except jwt.MissingRequiredClaimError as error:
            raise IdTokenRefused(f"The ID token lacks the {error.claim!r} claim.") from error
        except jwt.PyJWTError as error:
            raise IdTokenRefused(f"The ID token was refused: {error}.") from error


class _CountedJWKClient(jwt.PyJWKClient):
    """PyJWT's key client, its fetches (not its cache hits) counted as outgoing calls."""

    def fetch_data(self):
        with metrics.outgoing_call("oidc", "GET jwks"):
            return super().fetch_data()


_verifiers: dict[tuple, Verifier] = {}
_verifiers_lock = threading.Lock()


def verifier_for(config):
    """The process's verifier for these settings, so the discovery document and keys stay cached."""
    key = (config.issuer, config.audience, config.leeway_seconds, config.cache_seconds, config.refresh_cooldown_seconds)
    with _verifiers_lock:
        if key not in _verifiers:
            _verifiers[key] = Verifier(config)
        return _verifiers[key]
