"""The tasks this process serves, loaded once from NEUTRINO_TASK_MODULES."""

from __future__ import annotations

import functools

from neutrino.app import TaskSpec, load_tasks
from tasks_app.core.conf import neutrino_settings
from tasks_app.core.errors import TaskNotFound


@functools.cache
def registered_tasks() -> dict[str, TaskSpec]:
    """Every registered task by name. Raises `TaskDefinitionError` if a module is broken."""
    return load_tasks(neutrino_settings().task_modules)


def task_spec(name: str) -> TaskSpec:
    spec = registered_tasks().get(name)
    if spec is None:
        known = ", ".join(sorted(registered_tasks())) or "none"
        raise TaskNotFound(f"no task named {name!r} is registered (registered tasks: {known})", task=name)
    return spec
