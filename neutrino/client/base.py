"""What the blocking and the asyncio client share: their settings, their flows, and when a request
that lost its connection is sent again. Only the waiting and the sending differ between them."""

from __future__ import annotations

import httpx

from neutrino.client.flows import Flows, Request, Submitted
from neutrino.client.schedules import ScheduleFlows
from neutrino.client.wire import backoff_s, may_resend, transport_error

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_SUBMIT_RETRIES = 3


class ClientBase:
    """The settings and the resend rule of a client; the subclass adds its httpx client and sends with it."""

    def __init__(self, base_url: str, timeout: float, submit_retries: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.submit_retries = submit_retries
        self._flows = Flows(timeout)
        self._schedules = ScheduleFlows()

    def _pause_before_resend_s(self, request: Request, exc: httpx.TransportError, resend: int,
                               timeout_s: float) -> float:
        """Seconds to wait before sending `request` again for the `resend`-th time (counted from 1) after `exc`.

        Raises the client's error for `exc` instead when the request must not be sent again: its resends are
        spent, or it may have reached the server and is not safe to repeat. Call it while handling `exc`.
        """
        if resend <= self.submit_retries and may_resend(request, exc):
            return backoff_s(resend)
        raise transport_error(request, exc, self.base_url, timeout_s) from exc


class HandleBase:
    """What a task's handle knows from its submit, for both kinds of client."""

    def __init__(self, submitted: Submitted) -> None:
        self.id = submitted.task_id
        self.function_name = submitted.function_name
        # A unique task's duplicate submit: this handle is the task the first submit made.
        self.deduplicated = submitted.deduplicated
        self._submitted = submitted

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.function_name or 'task'} {self.id}>"
