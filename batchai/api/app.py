"""The FastAPI application: the ARM routes of Microsoft.BatchAI 2018-05-01 plus the node side door.

The same ASGI app is served by uvicorn in the embedded host and wrapped by the Functions HTTP
trigger on Azure.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from batchai import dashboard
from batchai.api import clusters, files, jobs, live, openapi, operations, security, sweeps, workspaces
from batchai.api.arm import JSONResponse
from batchai.api.auth import ArmGate, Authenticator, Oidc
from batchai.api.nodes import NodeDoor, NodeWaker
from batchai.errors import ApiError
from batchai.services import Services
from batchai.signing import SigningKeys

log = logging.getLogger("batchai.api")


def _error(status: int, code: str, message: str, target: str | None = None) -> JSONResponse:
    return JSONResponse(ApiError(status, code, message, target).to_body(), status_code=status)


def create_app(services: Services, *, token: str, node_key: bytes, node_waker: NodeWaker | None = None) -> FastAPI:
    """`node_waker`: the one whose `wake` the services were given as `wake_nodes`, so that activities end
    agents' long-polling heartbeats early (without it, a new one nobody wakes: agents learn at their next poll)."""
    waker = node_waker or NodeWaker()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        waker.loop = asyncio.get_running_loop()  # activities' threads wake long-polling agents on it
        yield

    app = FastAPI(
        title="Batch AI (open rebuild)",
        version="2018-05-01",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    app.state.services = services
    app.state.signing_keys = SigningKeys(services.store)

    authenticator = Authenticator(services.store, token, Oidc.from_env())
    app.add_middleware(ArmGate, authenticator=authenticator, node_door=NodeDoor(services, node_key, waker))

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(exc.to_body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        target = ".".join(str(p) for p in first["loc"][1:]) or None
        return _error(400, "InvalidRequestContent", f"{target or 'request'}: {first['msg']}", target)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        if exc.status_code == 404:
            return _error(404, "ResourceNotFound", f"No such resource or operation: {request.method} {request.url.path}")
        if exc.status_code == 405:
            return _error(405, "MethodNotAllowed", f"{request.method} is not supported on {request.url.path}")
        return _error(exc.status_code, "Error", str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "InternalServerError", "The server failed to process the request.")

    @app.get("/healthz")
    def healthz():
        return {"status": "ok", "pid": os.getpid()}  # which of the host's processes answered

    for module in (workspaces, clusters, jobs, sweeps, operations, files, security, live, dashboard):
        app.include_router(module.router)
    app.include_router(dashboard.api_router)
    openapi.install(app)
    return app
