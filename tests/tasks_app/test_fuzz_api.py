"""schemathesis against the API's own OpenAPI document, through the WSGI app in this process.

For each documented operation (the polling API and a set of tasks: sync ones that answer, raise or
return what JSON cannot hold, queued ones, their batch submits), a bounded number of generated requests,
valid and invalid. Each run draws a new seed, so runs explore new cases; a failure prints its seed, and
NEUTRINO_FUZZ_SEED=<seed> replays that run. Every answer must be documented for its operation, match its
schema and content type, and never be a 5xx, except a task's own failure (500 or 504 with the task id,
as DESIGN.md says). Queued tasks go to a nats-server of this test's own.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.internal import lambda_sources
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


def _describe_lambda_or_not(f: Any, *args: Any, **kwargs: Any) -> str:
    """Hypothesis' lambda description, which only labels a strategy, or a fixed one where it cannot parse.

    To describe a lambda Hypothesis parses the source of the module that holds it; on CPython 3.11.7 that
    parse sometimes raises "SystemError: AST constructor recursion depth mismatch" in the middle of
    schemathesis' generation, and the run then fails as flaky data generation. The fallback is cached
    like any description, so a replay draws exactly what the first run drew.
    """
    try:
        return _describe_lambda(f, *args, **kwargs)
    except SystemError:
        return "lambda: <source unavailable>"


_describe_lambda = lambda_sources._lambda_description
lambda_sources._lambda_description = _describe_lambda_or_not

SEED = int(os.environ.get("NEUTRINO_FUZZ_SEED") or random.SystemRandom().getrandbits(32))
MAX_EXAMPLES = 25
# Tasks with something to find: free-form JSON (echo), typed args (add, fast_api), a task that raises
# (boom) or returns a set (not_json), an async def, and queued tasks of two pools. Tasks that sleep or
# kill their process are left to their own tests: they would spend the time budget waiting.
FUZZED_TASKS = ("add", "echo", "boom", "not_json", "async_add", "fast_api", "wk_add", "wk_noop", "matmul")


@schemathesis.check
def no_server_error_but_a_tasks_own(ctx, response, case) -> None:
    """No 5xx, except a task's own failure: 500 or 504 that names the task it made."""
    if response.status_code < 500:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if response.status_code in (500, 504) and isinstance(body, dict) and body.get("task_id"):
        return None
    raise AssertionError(
        f"{case.operation.label} answered {response.status_code}: {response.content[:500]!r}"
    )


CHECKS = [
    no_server_error_but_a_tasks_own,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def load_schema() -> schemathesis.BaseSchema:
    from django.core.wsgi import get_wsgi_application

    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "generation": {"max-examples": MAX_EXAMPLES, "mode": "all"},
    })
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", get_wsgi_application(), config=config)
    tasks = "|".join(FUZZED_TASKS)
    return schema.include(path_regex=rf"^/tasks|^/api/({tasks})(/batch)?$")


schema = load_schema()


@pytest.fixture(autouse=True)
def _say_the_seed(request: pytest.FixtureRequest) -> None:
    """Shown with a failure's report, so that run can be replayed."""
    request.node.add_report_section("setup", "fuzz seed", f"replay with NEUTRINO_FUZZ_SEED={SEED}")


@schema.parametrize()
# The fixtures (pools, the nats-server) are meant to be shared by an operation's generated requests.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)
def test_every_answer_is_documented_and_no_5xx_but_a_tasks_own(case, default_pools, private_nats) -> None:
    case.call_and_validate(checks=CHECKS)
