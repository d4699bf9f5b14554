"""The domain's one error type. Each carries the HTTP status a caller sees and a message a person can act on.

`neutrino_site.api` turns every `NeutrinoError` into the one JSON error shape:
    {"error": "<code>", "message": "<what happened and what to do>", ...details}
"""

from __future__ import annotations

from typing import Any


class NeutrinoError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.details}


class BadRequest(NeutrinoError):
    status = 400
    code = "bad_request"


class Unauthorized(NeutrinoError):
    status = 401
    code = "unauthorized"


class Forbidden(NeutrinoError):
    status = 403
    code = "forbidden"


class CrossSiteRequest(NeutrinoError):
    """A browser sent the request from a page of another site (see tasks_app.api.browsers)."""

    status = 403
    code = "cross_site_request"


class TaskNotFound(NeutrinoError):
    status = 404
    code = "not_found"


class TokenNotFound(NeutrinoError):
    status = 404
    code = "not_found"


class ScheduleNotFound(NeutrinoError):
    status = 404
    code = "not_found"


class GroupNotFound(NeutrinoError):
    status = 404
    code = "not_found"


class Conflict(NeutrinoError):
    status = 409
    code = "conflict"


class PayloadTooLarge(NeutrinoError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(NeutrinoError):
    status = 415
    code = "unsupported_media_type"


class InvalidArguments(NeutrinoError):
    status = 422
    code = "invalid_arguments"


class Overloaded(NeutrinoError):
    status = 429
    code = "overloaded"


class TaskFailed(NeutrinoError):
    status = 500
    code = "task_failed"


class NotImplementedYet(NeutrinoError):
    status = 501
    code = "not_implemented"


class BrokerUnavailable(NeutrinoError):
    status = 503
    code = "broker_unavailable"


class DatabaseUnavailable(NeutrinoError):
    status = 503
    code = "database_unavailable"


class TaskTimeout(NeutrinoError):
    status = 504
    code = "task_timeout"
