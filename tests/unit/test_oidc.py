"""OIDC sign-in (batchai.api.auth.Oidc): JWTs checked against keys fetched from the issuer's JWKS URL."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from batchai.api.auth import AuthFailed, Oidc

ISSUER, AUDIENCE = "https://login.example/t/v2.0", "api://batchai"


@pytest.fixture
def issuer():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = json.dumps({"keys": [{**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": "k", "use": "sig"}]}).encode()

    class Keys(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Keys)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield key, f"http://127.0.0.1:{server.server_address[1]}/keys"
    server.shutdown()


def token(key, **claims) -> str:
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "s",
        "oid": "o-1",
        "name": "Ada",
        "exp": now + 60,
        "roles": ["Contributor", "Other.Role"],
    }
    return jwt.encode({**body, **claims}, key, algorithm="RS256", headers={"kid": "k"})


def test_a_jwt_checked_against_the_issuers_jwks_url_names_its_principal_and_roles(issuer):
    key, url = issuer
    oidc = Oidc(ISSUER, AUDIENCE, url)
    who = oidc.principal(token(key))
    assert (who.id, who.name, who.kind) == ("oidc:o-1", "Ada", "oidc")
    assert [(a.scope, a.role) for a in who.assignments] == [("/", "Contributor")]  # roles not ours are ignored
    for bad in (
        token(key, aud="x"),
        token(key, iss="x"),
        token(key, exp=1),
        token(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "a.b.c",
    ):
        with pytest.raises(AuthFailed):
            oidc.principal(bad)


def test_half_given_settings_are_an_error_naming_what_is_missing(monkeypatch):
    monkeypatch.setenv("BATCHAI_OIDC_ISSUER", ISSUER)
    monkeypatch.delenv("BATCHAI_OIDC_AUDIENCE", raising=False)
    monkeypatch.delenv("BATCHAI_OIDC_JWKS", raising=False)
    with pytest.raises(ValueError, match="BATCHAI_OIDC_AUDIENCE, BATCHAI_OIDC_JWKS"):
        Oidc.from_env()
    monkeypatch.delenv("BATCHAI_OIDC_ISSUER")
    assert Oidc.from_env() is None
