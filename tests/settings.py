"""Test settings: the project's settings with test values put in the environment first.

Set through the environment (not by overriding names here) so that the worker
processes the tests start inherit the same values.
"""

import os
import secrets
import tempfile
from pathlib import Path

_TMP = Path(tempfile.mkdtemp(prefix="neutrino-tests-"))
os.environ.setdefault("NEUTRINO_DATA_DIR", str(_TMP))
# A file, not :memory:, so worker processes started by the tests share the test database.
os.environ.setdefault("NEUTRINO_TEST_SQLITE_PATH", str(_TMP / "test.db"))
os.environ["NEUTRINO_TASK_MODULES"] = (
    "tests.fixtures.api_tasks,tests.fixtures.worker_tasks,tests.fixtures.dashboard_tasks,examples.tasks,"
    "tests.fixtures.pool_tasks,tests.fixtures.log_tasks,tests.fixtures.limit_tasks,tests.fixtures.group_tasks"
)
os.environ.setdefault("NEUTRINO_SYNC_PROCESSES", "2")
# The API tests call anonymously; tests of tokens turn this off with the `settings` fixture.
os.environ.setdefault("NEUTRINO_ALLOW_ANONYMOUS", "1")

# `neutrino serve`, the workers and `neutrino autoscale` refuse the public development key, and the
# HTTP server unnamed hosts: every server a test starts inherits these (tests/servers.py `cli_env`).
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

from neutrino_site.settings import *  # noqa: E402, F403
