"""ARM conventions shared by every route: api-version, bodies, paging and long-running operations."""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlencode

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse as StarletteJSONResponse
from fastapi.responses import Response

from batchai import API_VERSION
from batchai.errors import ApiError


class JSONResponse(StarletteJSONResponse):
    """Rendered by orjson: listing a thousand jobs took json.dumps a tenth of a core at one poll a second."""

    def render(self, content) -> bytes:
        return orjson.dumps(content)


MAX_PAGE = 1000
POLL_SECONDS = "1"


def require_api_version(request: Request) -> None:
    """Every ARM request names `api-version=2018-05-01` (nextLinks carry it too)."""
    version = request.query_params.get("api-version")
    if version is None:
        raise ApiError(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
            "api-version",
        )
    if version != API_VERSION:
        raise ApiError(
            400,
            "InvalidApiVersionParameter",
            f"The api-version '{version}' is invalid. The supported version is '{API_VERSION}'.",
            "api-version",
        )


async def read_body(receive, limit: int, what: str) -> bytes:
    """An ASGI request's whole body, refused with a 413 past `limit` bytes (`what`: "A request body")."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError.bad_request("The client went away before its request was read.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "RequestEntityTooLarge", f"{what} is limited to {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def json_body(request: Request, *, required: bool = True) -> dict:
    return json_object(await request.body(), required=required)


def json_object(raw: bytes, *, required: bool = True) -> dict:
    """A request body that must be a JSON object (400 otherwise; empty is `{}` unless `required`)."""
    if not raw.strip():
        if required:
            raise ApiError.bad_request("The request body is required.")
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError.bad_request(f"The request body is not valid JSON: {exc}.") from exc
    except RecursionError:  # nested past what the parser recurses into: far past MAX_JSON_DEPTH
        raise ApiError.bad_request(f"The request body nests deeper than {MAX_JSON_DEPTH} levels.") from None
    if _depth(body) > MAX_JSON_DEPTH:
        raise ApiError.bad_request(f"The request body nests deeper than {MAX_JSON_DEPTH} levels.")
    if not isinstance(body, dict):
        raise ApiError.bad_request("The request body must be a JSON object.")
    return body


MAX_JSON_DEPTH = 32  # a job body nests about eight levels


def _depth(value) -> int:
    """How deep objects and arrays nest in `value` (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_JSON_DEPTH:
                stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def page_size(request: Request) -> int:
    text = request.query_params.get("maxresults")
    if text is None:
        return MAX_PAGE
    try:
        size = int(text)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_PAGE:
        raise ApiError.bad_request(f"maxresults must be an integer from 1 to {MAX_PAGE}.", target="maxresults")
    return size


MAX_SKIP_TOKEN = (1 << 63) - 1  # a store's sequence numbers are 64-bit


def skip_token(request: Request) -> int:
    text = request.query_params.get("$skiptoken", "0")
    if len(text) > 19 or not text.isascii() or not text.isdigit() or int(text) > MAX_SKIP_TOKEN:
        raise ApiError.bad_request("The $skiptoken is not valid.", target="$skiptoken")
    return int(text)


def next_link(request: Request, token: int) -> str:
    """The SDK GETs nextLink verbatim: it must carry every parameter, api-version included."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "$skiptoken"]
    params.append(("$skiptoken", str(token)))
    return str(request.url.replace(query=urlencode(params)))


def paged(request: Request, items: list[dict], token: int | None) -> JSONResponse:
    return JSONResponse({"value": items, "nextLink": next_link(request, token) if token is not None else None})


def page_records(request: Request, fetch, render) -> JSONResponse:
    """Page a store listing by creation sequence: `fetch(after_seq, limit)` -> records."""
    size = page_size(request)
    records = fetch(skip_token(request), size + 1)
    more = len(records) > size
    records = records[:size]
    return paged(request, [render(r) for r in records], records[-1].seq if more else None)


def operation_url(request: Request, subscription: str, location: str, op_id: str) -> str:
    base = str(request.base_url).rstrip("/")
    return (
        f"{base}/subscriptions/{subscription}/providers/Microsoft.BatchAI/locations/{location}"
        f"/operationresults/{op_id}?api-version={API_VERSION}"
    )


def accepted(request: Request, subscription: str, location: str, op_id: str) -> Response:
    return Response(
        status_code=202,
        headers={
            "Location": operation_url(request, subscription, location, op_id),
            "Retry-After": POLL_SECONDS,
        },
    )


def new_operation_id() -> str:
    return uuid.uuid4().hex
