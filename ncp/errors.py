"""One error hierarchy for every role, mapped to HTTP in one place.

::

    NcpError (500)
    ├── InvalidRequest (400)         bad parameter, malformed UID, malformed body
    │   └── InvalidTopology          a topology file that cannot start (names the field)
    ├── Unauthorized (401)           missing or unverifiable credentials
    ├── Forbidden (403)              valid credentials, request not allowed
    ├── NotFound (404)               unknown resource, community or Retrieve Location UID
    ├── MethodNotAllowed (405)       a route that does not take this method
    ├── NotAcceptable (406)          no acceptable media type (PS3.18 8.7, MHD ITI-68)
    ├── RequestTimeout (408)         the request body stopped arriving (ncp.bodytimeout)
    ├── Gone (410)                   deprecated document or deleted instance
    ├── Conflict (409)               a store refuses a write that contradicts what it holds
    ├── PayloadTooLarge (413)        body or DICOM element beyond the configured bound
    ├── UnsupportedMediaType (415)   STOW/ITI-65 body of the wrong type
    └── UpstreamError (502)          the next hop failed before answering
        ├── UpstreamTimeout (504)    the next hop did not answer in time
        └── Unavailable (503)        overloaded or down; carries Retry-After

FHIR routes render an OperationOutcome (``issue.code`` from the table below); DICOMweb
routes render the status with a ``Warning: 299 <agent>: <text>`` header (PS3.18 8.6.2).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "Conflict",
    "Forbidden",
    "Gone",
    "InvalidRequest",
    "InvalidTopology",
    "MethodNotAllowed",
    "NcpError",
    "NotAcceptable",
    "NotFound",
    "PayloadTooLarge",
    "RequestTimeout",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "UpstreamError",
    "UpstreamTimeout",
    "dicomweb_error_response",
    "fhir_error_response",
    "from_http_exception",
    "operation_outcome",
    "warning_header",
]


class NcpError(Exception):
    """Base of every error the testbed raises on purpose."""

    status: ClassVar[int] = 500
    fhir_code: ClassVar[str] = "exception"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})


class InvalidRequest(NcpError):
    status = 400
    fhir_code = "invalid"


class InvalidTopology(InvalidRequest):
    """Raised at start-up; the message names the offending field."""


class Unauthorized(NcpError):
    status = 401
    fhir_code = "login"


class Forbidden(NcpError):
    status = 403
    fhir_code = "forbidden"


class NotFound(NcpError):
    status = 404
    fhir_code = "not-found"


class MethodNotAllowed(NcpError):
    status = 405
    fhir_code = "not-supported"


class NotAcceptable(NcpError):
    status = 406
    fhir_code = "not-supported"


class RequestTimeout(NcpError):
    status = 408
    fhir_code = "timeout"


class Conflict(NcpError):
    status = 409
    fhir_code = "conflict"


class Gone(NcpError):
    status = 410
    fhir_code = "deleted"


class PayloadTooLarge(NcpError):
    status = 413
    fhir_code = "too-costly"


class UnsupportedMediaType(NcpError):
    status = 415
    fhir_code = "not-supported"


class UpstreamError(NcpError):
    status = 502
    fhir_code = "transient"


class UpstreamTimeout(UpstreamError):
    status = 504
    fhir_code = "timeout"


class Unavailable(UpstreamError):
    status = 503
    fhir_code = "transient"

    def __init__(self, message: str, *, retry_after: int = 5, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after), **(headers or {})})


_BY_STATUS: dict[int, type[NcpError]] = {
    400: InvalidRequest,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


def from_http_exception(exc: HTTPException) -> NcpError:
    """Starlette's own refusals (no route 404, method 405, unreadable form 400) as the NcpError of that
    status, so that an app's NcpError handler gives them its shape (OperationOutcome or Warning)."""
    return _BY_STATUS.get(exc.status_code, InvalidRequest)(str(exc.detail), headers=dict(exc.headers or {}))


def operation_outcome(
    message: str,
    *,
    code: str = "exception",
    severity: str = "error",
    extra: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A FHIR R4 OperationOutcome with one issue (plus ``extra`` issues)."""
    issues = [{"severity": severity, "code": code, "diagnostics": message}, *(extra or [])]
    return {"resourceType": "OperationOutcome", "issue": issues}


def fhir_error_response(exc: NcpError) -> Response:
    body = operation_outcome(exc.message, code=exc.fhir_code)
    return Response(
        json.dumps(body), status_code=exc.status, media_type="application/fhir+json", headers=exc.headers
    )


def fhir_exception_handlers() -> dict[Any, Callable[[Request, Exception], Response]]:
    """A FHIR server's handlers: every :class:`NcpError`, and Starlette's own 404 (no route) and 405
    (method), as an OperationOutcome, with the caller's ``X-Request-Id`` echoed."""

    def handle(request: Request, exc: Exception) -> Response:
        error = from_http_exception(exc) if isinstance(exc, HTTPException) else exc
        assert isinstance(error, NcpError)
        response = fhir_error_response(error)
        if rid := request.headers.get("x-request-id"):
            response.headers["x-request-id"] = rid
        return response

    return {NcpError: handle, HTTPException: handle}


def warning_header(agent: str, text: str, code: int = 299) -> str:
    """RFC 7234 §5.5 warn-value; quotes escaped, anything but printable ASCII (echoed input) replaced."""
    printable = "".join(c if " " <= c <= "~" else "?" for c in text)
    escaped = printable.replace("\\", "\\\\").replace('"', '\\"')
    return f'{code} {agent} "{escaped}"'


def dicomweb_error_response(exc: NcpError, agent: str) -> Response:
    headers = {"Warning": warning_header(agent, exc.message), **exc.headers}
    body = json.dumps({"status": exc.status, "message": exc.message})
    return Response(body, status_code=exc.status, media_type="application/json", headers=headers)
