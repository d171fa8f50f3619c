"""The front door of the ARM API: who is calling (bearer tokens, OIDC), whether their role allows the
request (`batchai.access`), and the audit log of every change and every failed authentication.

Bearer tokens are, in the order tried: the server's own token (the service Owner, as before roles
existed), an API token `bai.<id>.<secret>` made with `POST /providers/Microsoft.BatchAI/tokens`, and,
when `BATCHAI_OIDC_ISSUER`, `BATCHAI_OIDC_AUDIENCE` and `BATCHAI_OIDC_JWKS` (a JWKS URL or file) are
set, a JWT from that identity provider (Entra ID): signature checked against the issuer's keys,
issuer, audience and expiry required. A JWT's `roles` claim (Entra app roles) names its service-wide
roles: `Owner`, `Contributor`, `Reader`.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from batchai import access
from batchai.access import Principal
from batchai.api.arm import JSONResponse, read_body, require_api_version
from batchai.api.nodes import PREFIX as NODE_PREFIX
from batchai.audit import audit
from batchai.errors import ApiError

log = logging.getLogger("batchai.api.auth")

OPEN_PREFIXES = (
    "/_files/",
    "/internal/",
    "/healthz",
    "/openapi",
    "/dashboard",
)  # API descriptions (openapi.py); the dashboard's pages and sign-in exchange
SECURITY_PREFIX = "/providers/Microsoft.BatchAI/"  # whoami, tokens, auditLog, operations: the routes decide
MAX_BODY_BYTES = 4 << 20  # an ARM request body: a job with its whole command line is far below this
MAX_AUTHORIZATION = 16 << 10  # an Entra JWT with many groups stays far below this
JWT_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384"]
ANONYMOUS = "anonymous"


class AuthFailed(Exception):
    def __init__(self, message: str, principal: str = ANONYMOUS):
        super().__init__(message)
        self.principal = principal


@dataclass
class Oidc:
    """JWTs of one identity provider: `jwks` is its keys' URL (fetched and cached) or a JWKS file."""

    issuer: str
    audience: str
    jwks: str

    @classmethod
    def from_env(cls) -> Oidc | None:
        names = ("BATCHAI_OIDC_ISSUER", "BATCHAI_OIDC_AUDIENCE", "BATCHAI_OIDC_JWKS")
        given = {n: os.environ.get(n, "") for n in names}
        if not any(given.values()):
            return None
        missing = [n for n, v in given.items() if not v]
        if missing:
            raise ValueError(f"OIDC sign-in is half configured: set {', '.join(missing)} too")
        return cls(*given.values())

    def __post_init__(self) -> None:
        import jwt

        self._jwt = jwt
        self._client = jwt.PyJWKClient(self.jwks, cache_keys=True) if self.jwks.startswith(("https://", "http://")) else None

    def _key(self, token: str):
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        with open(self.jwks) as f:  # read each time: a rotated key file is seen at once
            keys = self._jwt.PyJWKSet.from_dict(json.load(f))
        kid = self._jwt.get_unverified_header(token).get("kid")
        for key in keys.keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise self._jwt.InvalidTokenError("no key of the issuer matches the token's kid")

    def principal(self, token: str) -> Principal:
        jwt = self._jwt
        try:
            claims = jwt.decode(
                token,
                self._key(token),
                algorithms=JWT_ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except (jwt.PyJWTError, OSError, ValueError, KeyError) as exc:
            raise AuthFailed(f"The identity token was refused: {type(exc).__name__}.") from None
        subject = str(claims.get("oid") or claims["sub"])
        name = str(claims.get("preferred_username") or claims.get("upn") or claims.get("name") or subject)
        roles = claims.get("roles") if isinstance(claims.get("roles"), list) else []
        assignments = []
        for role in roles:
            try:
                assignments.append(access.Assignment(access.SERVICE, access.normalize_role(str(role))))
            except ValueError:
                continue  # an app role that is not ours
        return Principal(f"oidc:{subject}", name[:200], "oidc", tuple(assignments))


class Authenticator:
    def __init__(self, store, owner_token: str, oidc: Oidc | None):
        self.store = store
        self.owner = f"Bearer {owner_token}"
        self.oidc = oidc

    def identify(self, header: str) -> Principal:
        """The principal of an Authorization header's value (blocking: it may read the store); AuthFailed otherwise."""
        if hmac.compare_digest(header.encode(), self.owner.encode()):
            return access.OWNER
        scheme, _, presented = header.partition(" ")
        if scheme != "Bearer" or not presented:
            raise AuthFailed("The request needs 'Authorization: Bearer <token>'.")
        token_id = access.token_id_of(presented)
        if token_id is not None:
            record = self.store.get_token(token_id)
            if record is None or not access.token_matches(record, presented):
                raise AuthFailed("The token is not valid.")
            why = access.token_usable(record, time.time())
            if why:
                raise AuthFailed(why, f"token:{token_id}")
            return access.token_principal(record)
        if self.oidc is not None and presented.count(".") == 2:
            return self.oidc.principal(presented)
        raise AuthFailed("The token is not valid.")


def _error(status: int, code: str, message: str, target: str | None = None) -> JSONResponse:
    return JSONResponse(ApiError(status, code, message, target).to_body(), status_code=status)


class ArmGate:
    """Every ARM request names the api-version and a principal whose role allows it; changes are
    audited with their result. The node side door, signed file URLs and the health check have their
    own rules. Plain ASGI: as a BaseHTTPMiddleware it cost about a tenth of every request."""

    def __init__(self, app, authenticator: Authenticator, node_door):
        self.app = app
        self.auth = authenticator
        self.node_door = node_door

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith(NODE_PREFIX):
            return await self.node_door(scope, receive, send)
        if scope["type"] != "http" or scope["path"].startswith(OPEN_PREFIXES):
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        try:
            principal = await self._principal(scope)
            require_api_version(Request(scope))
            wanted = access.request_action(method, path)
            if wanted is None and method not in ("GET", "HEAD") and not path.startswith(SECURITY_PREFIX):
                wanted = ("write", access.SERVICE)
            if wanted is not None and not access.allowed(principal, *wanted):
                if wanted[0] == "write":
                    await run_in_threadpool(
                        audit, self.auth.store, principal.id, principal.name, access.audit_action(method, path), path, 403
                    )
                raise ApiError(
                    403,
                    "AuthorizationFailed",
                    f"The client '{principal.name}' does not have authorization to {wanted[0]} '{path}': its role there is too low.",
                )
            receive = await _buffered(scope, receive)
        except ApiError as exc:
            return await JSONResponse(exc.to_body(), status_code=exc.status)(scope, receive, send)
        scope.setdefault("state", {})["principal"] = principal
        if method in ("GET", "HEAD") or (wanted is not None and wanted[0] == "read"):
            return await self.app(scope, receive, send)
        return await self.app(scope, receive, self._audited(send, principal, method, path))

    async def _principal(self, scope) -> Principal:
        raw = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if len(raw) > MAX_AUTHORIZATION or not raw.isascii():
            failure = AuthFailed("The Authorization header is not a bearer token.")
        else:
            header = raw.decode("ascii")
            if hmac.compare_digest(raw, self.auth.owner.encode()):
                return access.OWNER  # the common case, without a thread hop
            try:
                return await run_in_threadpool(self.auth.identify, header)
            except AuthFailed as exc:
                failure = exc
        await run_in_threadpool(
            audit, self.auth.store, failure.principal, failure.principal, "authenticate", scope["path"], 401, str(failure)
        )
        raise ApiError(401, "AuthenticationFailed", str(failure))

    def _audited(self, send, principal: Principal, method: str, path: str):
        """`send` that records the change before its answer leaves: a client that sees the answer finds the entry."""

        async def audited_send(message):
            if message["type"] == "http.response.start" and not path.startswith(SECURITY_PREFIX):
                await run_in_threadpool(
                    audit, self.auth.store, principal.id, principal.name, access.audit_action(method, path), path, message["status"]
                )
            await send(message)

        return audited_send


async def _buffered(scope, receive):
    """The request body read up to MAX_BODY_BYTES (413 past it), handed on as one message."""
    declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
    if declared is not None and not declared.isdigit():
        raise ApiError.bad_request("The Content-Length header is not a number.")
    if declared is not None and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, "RequestEntityTooLarge", f"A request body is limited to {MAX_BODY_BYTES} bytes.")
    if scope["method"] in ("GET", "HEAD", "DELETE") and declared is None:
        return receive
    body = await read_body(receive, MAX_BODY_BYTES, "A request body")
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return await receive()  # the disconnect, when it comes
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
