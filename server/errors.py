"""Errors as OpenAI's API shapes them: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException


class APIError(Exception):
    """A request the server refuses: raised anywhere in a route, answered by the handler below."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, type: str = "invalid_request_error",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type, self.headers = type, headers


def error_response(error: APIError) -> JSONResponse:
    body = {"error": {"message": error.message, "type": error.type, "param": error.param,
                      "code": error.code}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def _validation_error(exc: RequestValidationError) -> APIError:
    """FastAPI's list of pydantic errors as one 400 naming the first bad field."""
    errors = exc.errors()
    first = errors[0]
    if first["type"] == "json_invalid" or (first["loc"] == ("body",)
                                            and first["type"] != "missing"):
        return APIError(400, "the request body is not a valid JSON object", code="invalid_json")
    if first["loc"] == ("body",):
        return APIError(400, "the request body is missing: send a JSON object",
                        code="invalid_json")
    # A union (stop: a string or a list) reports each branch; a branch whose type matched
    # says more ("at most 4 items") than one whose type did not ("should be a string").
    field = first["loc"][:2]
    same = [e for e in errors if e["loc"][:2] == field]
    error = next((e for e in same if not e["type"].endswith("_type")), first)
    param = _param(error["loc"])
    if error["type"] == "extra_forbidden":
        return APIError(400, f"{param} is not a field this server supports", param=param,
                        code="unsupported_field")
    message = error["msg"][0].lower() + error["msg"][1:]
    return APIError(400, f"{param}: {message}", param=param,
                    code="missing_field" if error["type"] == "missing" else "invalid_value")


def _param(loc: tuple) -> str:
    """The dotted path of a field in the body ("messages.0.role"), without pydantic's names of
    union branches ("constrained-str")."""
    return ".".join(str(part) for part in loc[1:]  # loc[0] is "body"
                    if isinstance(part, int) or part.isidentifier())


def install_error_handlers(app: FastAPI) -> None:
    """Every error a client can cause, FastAPI's own included, answered in OpenAI's shape."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_validation_error(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(APIError(exc.status_code, str(exc.detail), code=code,
                                       headers=exc.headers))
