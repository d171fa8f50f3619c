"""The web dashboard: static pages served at `/dashboard/`, and its sign-in.

The pages are plain HTML, CSS and JavaScript from `static/` (nothing fetched from elsewhere; a
strict Content-Security-Policy says so to the browser). They call the same ARM API as the SDK,
with the principal's bearer token, so they show exactly what that principal may read.

Where the token lives: in the tab's `sessionStorage`, sent as `Authorization: Bearer`. The API keeps
one way to authenticate (no cookie, hence nothing for another site to ride on: no CSRF), the token
is gone when the tab closes, and it never appears in a URL. What a script injected into the page
could read, the CSP (scripts from this origin only, no inline script) and rendering every value as
text keep out.

Sign-in: paste a token, or follow a one-time link that `batchai dashboard` prints:
`POST /providers/Microsoft.BatchAI/dashboardSignIn` (authenticated like any ARM call) answers a
code that carries the caller's own token, encrypted (AES-GCM, under a random key kept in the
store) with an expiry of two minutes; the link has it after `#` (never sent to a server or in
a Referer). The page trades it at `POST /dashboard/signin` for the token, once: the code's nonce is
raised as a store flag, which only its first use can do, in every process of the host. A flag is
a few bytes per link made, kept.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, RedirectResponse, Response

from batchai.api.arm import JSONResponse, json_object
from batchai.api.deps import services
from batchai.errors import ApiError

router = APIRouter()  # under /dashboard: open (the pages and the code exchange carry no token)
api_router = APIRouter()  # behind the ARM gate
PREFIX = "/dashboard"
STATIC = Path(__file__).parent / "static"
CODE_SECONDS = 120
MAX_CODE_CHARS = 16_384
_AAD = b"batchai dashboard sign-in"
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def code_key(store) -> bytes:
    """The key of sign-in codes, the same in every process of the control plane (kept in the store)."""
    return bytes.fromhex(store.setting("dashboard_signin_key", lambda: secrets.token_hex(32)))


def make_code(key: bytes, token: str, now: float) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, json.dumps({"t": token, "exp": now + CODE_SECONDS}).encode(), _AAD)
    return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")


def open_code(key: bytes, code: str, now: float) -> tuple[str, str]:
    """(nonce, token) of a code this server made that has not expired; ApiError 403 otherwise."""
    try:
        raw = base64.urlsafe_b64decode(code + "=" * (-len(code) % 4))
        payload = json.loads(AESGCM(key).decrypt(raw[:12], raw[12:], _AAD))
    except (ValueError, InvalidTag):
        raise ApiError(403, "AuthenticationFailed", "The sign-in link is not valid.") from None
    if payload["exp"] < now:
        raise ApiError(403, "AuthenticationFailed", "The sign-in link has expired; make a new one (batchai dashboard).")
    return raw[:12].hex(), payload["t"]


@api_router.post("/providers/Microsoft.BatchAI/dashboardSignIn")
def create_sign_in(request: Request):
    """Ours: a one-time code for the dashboard that signs in as the caller (see the module's docstring)."""
    token = request.headers.get("authorization", "").removeprefix("Bearer ")
    code = make_code(code_key(services(request).store), token, time.time())
    return JSONResponse({"code": code, "expiresInSeconds": CODE_SECONDS, "path": f"{PREFIX}/#signin={code}"})


async def _small_body(request: Request) -> bytes:
    """This route is open to anyone: its body is read up to a bound, not whole."""
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_CODE_CHARS + 64:
            raise ApiError(413, "RequestEntityTooLarge", "A sign-in request is a small JSON object.")
    return data


@router.post(PREFIX + "/signin")
async def exchange(request: Request):
    body = json_object(await _small_body(request))
    code = body.get("code")
    if not isinstance(code, str) or not 0 < len(code) <= MAX_CODE_CHARS:
        raise ApiError.bad_request("code must be the sign-in link's code.", target="code")
    store = services(request).store
    nonce, token = open_code(await run_in_threadpool(code_key, store), code, time.time())
    first = await run_in_threadpool(store.set_flag, f"dashboard-signin:{nonce}")
    if not first:
        raise ApiError(403, "AuthenticationFailed", "The sign-in link was used already; make a new one (batchai dashboard).")
    return JSONResponse({"token": token}, headers={"Cache-Control": "no-store"})


@router.get(PREFIX)
def root():
    return RedirectResponse(PREFIX + "/", status_code=308)


@router.get(PREFIX + "/")
def index():
    return FileResponse(STATIC / "index.html", media_type=_TYPES[".html"], headers=HEADERS)


@router.get(PREFIX + "/{name}")
def asset(name: str) -> Response:
    """The bundled files, by name only (the listing is the allowlist)."""
    if name not in {p.name for p in STATIC.iterdir()} or Path(name).suffix not in _TYPES:
        raise ApiError.not_found(f"The dashboard has no file '{name}'.")
    return FileResponse(STATIC / name, media_type=_TYPES[Path(name).suffix], headers=HEADERS)
