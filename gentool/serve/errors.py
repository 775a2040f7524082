"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with its status codes.

400 ``invalid_request_error`` for a bad field (``model_not_loadable``: a model whose file cannot be
loaded), 401 for a missing or wrong key, 404 for an unknown
model (or route), 413 for a body over the limit, 503 when a model's queue is full, 500 for a bug.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """An error answered to the client as OpenAI does."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """The JSON document of an error."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def not_found(message: str, param: str | None = "model", code: str = "model_not_found") -> APIError:
    return APIError(404, message, param=param, code=code)


def not_loadable(what: str, exc: BaseException) -> APIError:
    """A model whose file cannot be loaded (truncated, not a model): the loader's one line."""
    return APIError(400, f"{what} cannot be loaded: {exc}", param="model", code="model_not_loadable")


def busy(what: str) -> APIError:
    return APIError(503, f"{what} is busy and its queue is full: retry in a moment", type="server_error",
                    code="queue_full")


UNAUTHORIZED = APIError(401, "missing or wrong API key: send the header 'Authorization: Bearer KEY' "
                        "(the key given to gentool serve --api-key)", code="invalid_api_key")


def too_large(limit: int) -> APIError:
    return APIError(413, f"request body over the limit of {limit:,} bytes", code="request_too_large")
