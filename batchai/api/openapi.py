"""What the API describes of itself: request bodies in `/openapi.json`, and the official 2018-05-01 description.

Routes read their JSON bodies themselves (`json_body` + `parse`), so that a bad body is a 400 in
the ARM error shape naming the field; FastAPI therefore sees no body parameter. `body(Model)` gives
such a route the `openapi_extra` that declares what it accepts (the pydantic model's wire schema,
camelCase), `body_schema` a hand-written schema for bodies checked by hand. `install` adds those
schemas to the app's document, and the `api-version` query parameter to every ARM operation.

`OFFICIAL_PATH` serves the official Microsoft.BatchAI 2018-05-01 REST description (Azure's
azure-rest-api-specs `BatchAI.json`, MIT), in the OpenAPI 3.0 form APIs-guru's openapi-directory
made of it (see static/NOTICE.md), with `servers` pointing at this server. Both documents are open
(no token): they describe the API, they hold no data.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

from fastapi import FastAPI, Request
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from batchai import API_VERSION
from batchai.api.arm import JSONResponse

OFFICIAL_PATH = "/openapi/2018-05-01/batchai.json"
OPEN_PATHS = ("/openapi.json", OFFICIAL_PATH)
OFFICIAL_FILE = Path(__file__).parent / "static" / "batchai-2018-05-01.openapi.json"
_MODELS: dict[str, type[BaseModel]] = {}
_SCHEMAS: dict[str, dict] = {}
API_VERSION_PARAMETER = {
    "name": "api-version",
    "in": "query",
    "required": True,
    "schema": {"type": "string", "enum": [API_VERSION]},
    "description": "The API version: every ARM request names it.",
}

CLOUD_ERROR = {
    "type": "object",
    "description": "An ARM error: bad input is a 400 whose target names the field.",
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "target": {"type": "string"},
                "details": {"type": "array", "items": {"type": "object"}},
            },
        }
    },
}
ERROR_RESPONSE = {
    "description": "The request failed (ARM error shape).",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CloudError"}}},
}


def _request_body(name: str, required: bool) -> dict:
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}}


def body(model: type[BaseModel], *, required: bool = True) -> dict:
    """`openapi_extra` for a route whose body `model` validates."""
    _MODELS[model.__name__] = model
    return _request_body(model.__name__, required)


def body_schema(name: str, schema: dict, *, required: bool = True) -> dict:
    """`openapi_extra` for a route whose body is checked by hand against what `schema` describes."""
    _SCHEMAS[name] = schema
    return _request_body(name, required)


def install(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None and app.state.openapi_complete:
            return app.openapi_schema
        schema = generate()
        _, defs = models_json_schema(
            [(m, "validation") for m in _MODELS.values()], by_alias=True, ref_template="#/components/schemas/{model}"
        )
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(defs.get("$defs", {}))
        schemas.update(_SCHEMAS)
        schemas["CloudError"] = CLOUD_ERROR
        for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, which this API never answers
            schemas.pop(name, None)
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                responses["default"] = ERROR_RESPONSE
                if path.startswith(("/subscriptions/", "/providers/")):
                    operation.setdefault("parameters", []).append(API_VERSION_PARAMETER)
        app.openapi_schema = schema
        app.state.openapi_complete = True
        return schema

    app.state.openapi_complete = False
    app.openapi = openapi  # type: ignore[method-assign]

    @app.get(OFFICIAL_PATH, include_in_schema=False)
    def official(request: Request):
        document = copy.deepcopy(_official())
        document["servers"] = [{"url": str(request.base_url).rstrip("/")}]
        return JSONResponse(document)


@cache
def _official() -> dict:
    return json.loads(OFFICIAL_FILE.read_text(encoding="utf-8"))
