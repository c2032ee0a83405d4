"""san-serve's errors: every failure is JSON ``{"error": {"code": str, "message": str}}`` with a 4xx or 5xx status.

``ApiError`` is raised anywhere (endpoints, the upload guard, the job runner); ``install_handlers`` turns it,
FastAPI's validation errors and Starlette's HTTP errors (unknown path, wrong method) into that shape.
``image_error`` maps an ``ImageError`` of ``gan_core.image_io`` (one line naming the file and the reason) to
a status and code, with the private temporary path replaced by the name the client uploaded.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["ApiError", "error_body", "image_error", "install_handlers"]

_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 408: "upload_timeout", 409: "conflict", 410: "expired",
                 413: "too_large", 415: "unsupported_media_type", 422: "invalid_parameter", 429: "queue_full",
                 500: "internal_error", 503: "unavailable"}  # fmt: skip


class ApiError(StarletteHTTPException):
    """An error answered as ``{"error": {"code", "message"}}`` with ``status``; ``headers`` e.g. Retry-After.

    A subclass of Starlette's HTTPException so that FastAPI passes it through unchanged when the upload
    guard raises it while the form is being parsed."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.code = code
        self.message = message


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def image_error(message: str, private: str, shown: str) -> ApiError:
    """The ApiError for an ``ImageError`` message about the temporary file ``private``, shown as ``shown``."""
    msg = message.replace(private, shown)
    low = msg.lower()
    if "empty file" in low:
        return ApiError(400, "empty_file", msg)
    if "exceeds the limit" in low:
        return ApiError(413, "too_many_pixels", msg)
    if "the output would be" in low:
        return ApiError(413, "output_too_large", msg)
    if "not an image" in low:
        return ApiError(415, "not_an_image", msg)
    if "only still images" in low:
        return ApiError(422, "animated_image", msg)
    return ApiError(422, "corrupt_image", msg)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path", "header")]
        where = ".".join(loc) or "request"
        msg = err.get("msg", "invalid")
        if err.get("type") == "missing":
            msg = "required field missing"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts) or "invalid request"


def install_handlers(app: FastAPI, on_error=None) -> None:
    """Answer every error of ``app`` as ``{"error": {"code", "message"}}``; ``on_error(code)`` counts them."""
    count = on_error or (lambda code: None)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        count(exc.code)
        return JSONResponse(error_body(exc.code, exc.message), exc.status_code, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path} (see /docs)"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path} (see /docs)"
        elif exc.status_code == 400 and request.method == "POST":  # Starlette's / FastAPI's form parser
            why = "" if "parsing the body" in message else f" ({message.rstrip('.')})"
            code, message = "bad_multipart", f"the request body is not valid multipart/form-data{why}"
        count(code)
        return JSONResponse(error_body(code, message), exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        count("invalid_parameter")
        return JSONResponse(error_body("invalid_parameter", _validation_message(exc)), 422)
