"""The service's errors: every bad request is an :class:`ApiError` with an HTTP status and one
sentence that says what to fix, answered as JSON ``{"error": {"status", "code", "message"}}``
(see :func:`detect.serve.app.create_app` for the handlers)."""

from __future__ import annotations

from typing import Optional


class ApiError(Exception):
    """A request the service refuses: ``status`` (4xx, or 503 when busy), a short ``code`` a
    client can branch on, and a ``message`` for people."""

    def __init__(self, status: int, code: str, message: str, headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers

    def body(self) -> dict:
        return {"error": {"status": self.status, "code": self.code, "message": self.message}}


def error_body(status: int, code: str, message: str) -> dict:
    return ApiError(status, code, message).body()
