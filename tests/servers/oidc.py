"""GitHub Actions' OIDC issuer for the tests: the discovery document, the key set, and ID tokens.

It speaks what token.actions.githubusercontent.com serves (docs.github.com, "About security
hardening with OpenID Connect"; OpenID Connect Discovery 1.0): `/.well-known/openid-configuration`
naming the issuer and `jwks_uri`, `/.well-known/jwks` with the RSA public keys (kid, use sig,
alg RS256), and tokens signed RS256 with real 2048-bit keys and GitHub's claims. `rotate()` starts
signing with a new key, published beside the old one, as an issuer rolling its keys does.
"""

import json
import secrets
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from .loopback import LoopbackServer, Response


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class OidcIssuer:
    def __init__(self):
        self.keys = {}  # kid -> private key, every one published
        self.jwks_answer = None  # a Response to serve instead of the key set (a broken issuer)
        self.discovery_answer = None  # …and instead of the discovery document
        self.requests = []  # paths asked, in order
        self.signing_kid = self.rotate()
        self._server = LoopbackServer(self._respond)
        self.url = self._server.url
        self.issuer = self.url

    def close(self):
        self._server.close()

    def rotate(self):
        """Sign with a new key from now on; the old one stays published."""
        kid = secrets.token_hex(8)
        self.keys[kid] = new_key()
        self.signing_kid = kid
        return kid

    def retire(self, kid):
        del self.keys[kid]

    def jwks(self):
        keys = []
        for kid, key in self.keys.items():
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def _respond(self, request):
        self.requests.append(request.path)
        if request.path == "/.well-known/openid-configuration" and self.discovery_answer:
            return self.discovery_answer
        if request.path == "/.well-known/openid-configuration":
            return Response.json(
                200,
                {
                    "issuer": self.issuer,
                    "jwks_uri": f"{self.url}/.well-known/jwks",
                    "subject_types_supported": ["public", "pairwise"],
                    "response_types_supported": ["id_token"],
                    "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti", "nbf", "ref", "repository"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "scopes_supported": ["openid"],
                },
            )
        if request.path == "/.well-known/jwks":
            return self.jwks_answer or Response.json(200, self.jwks())
        return Response.json(404, {"message": "Not Found"})

    def claims(self, *, audience, repository="nexo-org/nexo-be", ref="refs/heads/main", **overrides):
        """GitHub's claims for a workflow run of `repository` on `ref` (valid now, for five minutes)."""
        now = int(time.time())
        owner = repository.split("/")[0]
        workflow = f"{repository}/.github/workflows/build.yml@{ref}"
        claims = {
            "jti": secrets.token_hex(16),
            "sub": f"repo:{repository}:ref:{ref}",
            "aud": audience,
            "ref": ref,
            "sha": "a3f2b1c" + "0" * 33,
            "repository": repository,
            "repository_owner": owner,
            "repository_id": "74",
            "repository_owner_id": "65",
            "repository_visibility": "private",
            "run_id": "7711",
            "run_number": "10",
            "run_attempt": "1",
            "runner_environment": "github-hosted",
            "actor": "octocat",
            "actor_id": "12",
            "workflow": "build",
            "head_ref": "",
            "base_ref": "",
            "event_name": "push",
            "ref_type": "tag" if ref.startswith("refs/tags/") else "branch",
            "workflow_ref": workflow,
            "job_workflow_ref": workflow,
            "iss": self.issuer,
            "nbf": now - 5,
            "iat": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def token(self, *, kid=None, key=None, algorithm="RS256", headers=None, **claims):
        """An ID token with `claims(**claims)`, signed by the current key (or `key`, under `kid`)."""
        kid = kid or self.signing_kid
        signing_key = key if key is not None else self.keys[kid]
        return jwt.encode(
            self.claims(**claims), signing_key, algorithm=algorithm, headers={"kid": kid, **(headers or {})}
        )
