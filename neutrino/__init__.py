"""Neutrino: one HTTP front door for Python tasks.

The SDK a task module imports. It imports no Django, so task modules load in
worker children and on machines that only run workers. The HTTP client
(`NeutrinoClient`, `AsyncNeutrinoClient` and their exceptions, from `neutrino.client`)
is imported on first use, so `import neutrino` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from neutrino.app import Neutrino, Task, TaskDefinitionError, TaskFunction, TaskSpec
from neutrino.files import File
from neutrino.progress import progress
from neutrino.schedules import Schedule
from neutrino.tasklog import log

if TYPE_CHECKING:
    from neutrino.client import (
        AsyncNeutrinoClient,
        AsyncTask,
        AwaitableTask,
        Conflict,
        GatewayUnavailable,
        GroupInfo,
        NeutrinoClient,
        NeutrinoClientError,
        Overloaded,
        TaskCancelled,
        TaskExpired,
        TaskFailed,
        TaskInfo,
        TaskNotFound,
        TaskPage,
        TaskTimeout,
        Unauthorized,
        ValidationError,
        current_task_id,
    )
    from neutrino.fanout import chain, group, submit

__all__ = [
    "AsyncNeutrinoClient",
    "AsyncTask",
    "AwaitableTask",
    "Conflict",
    "File",
    "GatewayUnavailable",
    "GroupInfo",
    "Neutrino",
    "NeutrinoClient",
    "NeutrinoClientError",
    "Overloaded",
    "Schedule",
    "Task",
    "TaskCancelled",
    "TaskDefinitionError",
    "TaskExpired",
    "TaskFailed",
    "TaskFunction",
    "TaskInfo",
    "TaskNotFound",
    "TaskPage",
    "TaskSpec",
    "TaskTimeout",
    "Unauthorized",
    "ValidationError",
    "chain",
    "current_task_id",
    "group",
    "log",
    "progress",
    "submit",
]
_CLIENT_NAMES = frozenset(__all__) - {
    "File", "Neutrino", "Schedule", "Task", "TaskDefinitionError", "TaskFunction", "TaskSpec", "log", "progress",
}
_FANOUT_NAMES = frozenset({"chain", "group", "submit"})
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from neutrino import client, fanout  # the client's names, and submitting from inside a task

        return getattr(fanout if name in _FANOUT_NAMES else client, name)
    raise AttributeError(f"module 'neutrino' has no attribute {name!r}")
