"""Neutrino: one HTTP front door for Python tasks.

The SDK a task module imports. It imports no Django, so task modules load in
worker children and on machines that only run workers.
"""

from neutrino.app import Neutrino, Task, TaskDefinitionError, TaskSpec
from neutrino.progress import progress

__all__ = ["Neutrino", "Task", "TaskDefinitionError", "TaskSpec", "progress"]
__version__ = "0.1.0"
