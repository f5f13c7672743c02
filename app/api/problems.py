"""Errors as RFC 9457 problem details (`application/problem+json`) with a stable `code`."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import DomainError

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "description": "/problems/<code>"},
        "title": {"type": "string", "description": "the HTTP status' phrase"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "what happened, for people"},
        "code": {"type": "string", "description": "stable, for programs"},
    },
    "additionalProperties": False,
}
# Any route may refuse a request (authentication, scope, validation, a rule, an unknown object,
# a rate limit): the OpenAPI document says so for every operation, with the problem's schema.
OPENAPI_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "description": "Refused: a problem document; `code` says why.",
        "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}},
    },
}

# HTTP status of each domain error code; anything else refused by a rule is 422.
STATUS_OF_CODE = {
    "unknown_account": 404,
    "unknown_order": 404,
    "unknown_instrument": 404,
    "unknown_tenant": 404,
    "unknown_api_key": 404,
    "not_found": 404,
    "duplicate_client_order_id": 409,
    "idempotency_key_reused": 409,
    "instrument_exists": 409,
    "asset_exists": 409,
    "tenant_exists": 409,
    "order_not_open": 409,
    "instrument_halted": 409,
    "invalid_request": 400,
    "invalid_batch": 400,
    "unauthenticated": 401,
    "invalid_api_key": 401,
    "forbidden": 403,
    "rate_limited": 429,
    "overloaded": 503,
}


class Problem(Exception):
    """An HTTP error answer: `code` is the stable machine code, `detail` says what happened."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


def for_code(code: str, detail: str) -> Problem:
    return Problem(STATUS_OF_CODE.get(code, 422), code, detail)


def problem_response(problem: Problem) -> Response:
    body: dict[str, Any] = {
        "type": f"/problems/{problem.code}",
        "title": HTTPStatus(problem.status).phrase,
        "status": problem.status,
        "detail": problem.detail,
        "code": problem.code,
    }
    return Response(
        orjson.dumps(body),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=problem.headers,
    )


def _validation_detail(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
        parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else item.get("msg", ""))
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    """Every error the application can raise becomes a problem response."""

    @app.exception_handler(Problem)
    async def on_problem(request: Request, problem: Problem) -> Response:
        return problem_response(problem)

    @app.exception_handler(DomainError)
    async def on_domain_error(request: Request, error: DomainError) -> Response:
        return problem_response(for_code(error.code, error.message))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, error: RequestValidationError) -> Response:
        return problem_response(Problem(400, "invalid_request", _validation_detail(error)))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, error: StarletteHTTPException) -> Response:
        # 400: a body that is not JSON (or not UTF-8) at all, refused before validation.
        code = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}.get(
            error.status_code, "http_error"
        )
        return problem_response(
            Problem(error.status_code, code, str(error.detail), dict(error.headers or {}))
        )

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, error: Exception) -> Response:
        return problem_response(Problem(500, "internal_error", "internal error"))
