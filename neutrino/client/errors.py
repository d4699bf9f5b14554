"""The exceptions the client raises: one small tree under `NeutrinoClientError`.

Every one carries `.call` (what was called), `.status_code` and `.body` (what the server answered,
when it answered) and `.task_id` (when a task was made); its message names both.

    NeutrinoClientError        the base; also a server error the server did not explain (500 without a task)
    ├── TaskFailed             the task raised, crashed or returned something JSON cannot hold
    │                          (`.error_type`, `.traceback`; 500 from a sync call, or `wait()` on a failed task)
    ├── TaskTimeout            the task ran past its own timeout and was killed (504), or `wait(timeout=)`
    │                          ran out first (`.still_running` is then True: the task goes on)
    ├── TaskCancelled          the task was cancelled before it finished
    ├── TaskExpired            the task had not started by its expires_at and never ran (`wait()`)
    ├── TaskNotFound           no task of that name, or no task with that id (404)
    ├── ValidationError        the request was refused as it stands: bad arguments (422, `.fields` names
    │                          each), a malformed body (400), a body over the size limit (413)
    ├── Conflict               409: cancelling a finished task; an Idempotency-Key reused for another call
    ├── Unauthorized           401/403: no token, an unknown or a revoked one
    ├── Overloaded             429: the task's pool is full or the caller's rate limit is spent;
    │                          `.retry_after` is the seconds the server asked to wait
    └── GatewayUnavailable     the server cannot be reached or answered 502/503 (NATS down, pool missing),
                               or sent no answer within the request's timeout
"""

from __future__ import annotations

from typing import Any


class NeutrinoClientError(Exception):
    """Base of every error this client raises."""

    def __init__(self, message: str, *, call: str = "", status_code: int | None = None,
                 body: Any = None, task_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.call = call
        self.status_code = status_code
        self.body = body
        self.task_id = task_id
        # submit_many: the handles of the tasks earlier requests queued before this error.
        self.submitted: list[Any] = []


class TaskFailed(NeutrinoClientError):
    def __init__(self, message: str, *, error_type: str | None = None, traceback: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.error_type = error_type
        self.traceback = traceback


class TaskTimeout(NeutrinoClientError):
    def __init__(self, message: str, *, still_running: bool = False, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.still_running = still_running


class TaskCancelled(NeutrinoClientError):
    pass


class TaskExpired(NeutrinoClientError):
    pass


class TaskNotFound(NeutrinoClientError):
    pass


class ValidationError(NeutrinoClientError):
    def __init__(self, message: str, *, fields: list[dict[str, Any]] | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.fields = fields or []


class Conflict(NeutrinoClientError):
    pass


class Unauthorized(NeutrinoClientError):
    pass


class Overloaded(NeutrinoClientError):
    def __init__(self, message: str, *, retry_after: float = 1.0, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class GatewayUnavailable(NeutrinoClientError):
    pass
