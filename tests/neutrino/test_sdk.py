"""The SDK's decorator: what it accepts, what it refuses when it runs, and that it imports no Django."""

from __future__ import annotations

import subprocess
import sys

import pydantic
import pytest

from neutrino import Neutrino, TaskDefinitionError
from neutrino.app import load_tasks


def test_bare_decorator_gives_seed_defaults_and_stays_callable() -> None:
    app = Neutrino("sdk-bare")

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5
    assert (add.spec.execution_mode, add.spec.pool, add.spec.timeout_ms, add.spec.max_retries) == (
        "sync", "fast", 5000, 0,
    )


def test_options_and_per_mode_defaults() -> None:
    app = Neutrino("sdk-options")

    @app.task(execution_mode="async", timeout_secs=300, max_retries=3)
    def generate_report(dataset: str) -> dict:
        return {}

    @app.task(execution_mode="gpu", pool="a100", timeout_secs=600)
    def train_model(data: str) -> dict:
        return {}

    @app.task(execution_mode="async")
    async def fetch(url: str) -> str:
        return url

    assert (generate_report.spec.pool, generate_report.spec.timeout_ms, generate_report.spec.max_retries) == (
        "async", 300_000, 3,
    )
    assert (train_model.spec.pool, train_model.spec.timeout_ms) == ("a100", 600_000)
    assert fetch.spec.is_coroutine and fetch.spec.timeout_ms == 300_000
    assert generate_report.spec.expires_s is None

    @app.task(execution_mode="async", expires_s=90)
    def short_lived() -> None:
        return None

    assert short_lived.spec.expires_s == 90.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"execution_mode": "batch"}, "unknown execution_mode"),
        ({"timeout_ms": 0}, "must be positive"),
        ({"timeout_ms": -5}, "must be positive"),
        ({"timeout_secs": 0}, "must be positive"),
        ({"timeout_ms": 10, "timeout_secs": 1}, "not both"),
        ({"name": "not-an-identifier"}, "not a Python identifier"),
        ({"name": "class"}, "not a Python identifier"),
        ({"max_retries": -1}, "max_retries"),
        ({"execution_mode": "sync", "max_retries": 2}, "not retried"),
        ({"execution_mode": "async", "pool": "bad pool"}, "not an identifier"),
        ({"execution_mode": "async", "expires_s": 0}, "expires_s must be a positive number"),
        ({"execution_mode": "async", "expires_s": -3}, "expires_s must be a positive number"),
        ({"execution_mode": "async", "expires_s": "60"}, "expires_s must be a positive number"),
        ({"execution_mode": "async", "expires_s": True}, "expires_s must be a positive number"),
        ({"execution_mode": "async", "expires_s": float("inf")}, "expires_s must be a positive number"),
        ({"execution_mode": "sync", "expires_s": 60}, "cannot expire"),
    ],
)
def test_decorator_refuses_what_cannot_work(options: dict, message: str) -> None:
    app = Neutrino("sdk-refuse")
    with pytest.raises(TaskDefinitionError, match=message):

        @app.task(**options)
        def task(x: int) -> int:
            return x


def test_unknown_option_is_refused_when_the_decorator_runs() -> None:
    app = Neutrino("sdk-unknown")
    with pytest.raises(TypeError, match="timeout"):
        app.task(timeout=5)  # type: ignore[call-overload]


def test_duplicate_name_is_refused_naming_both_places() -> None:
    app = Neutrino("sdk-dup")

    @app.task
    def dup() -> None:
        return None

    with pytest.raises(TaskDefinitionError, match="defined twice"):

        @app.task(name="dup")
        def other() -> None:
            return None


def test_var_positional_is_refused() -> None:
    app = Neutrino("sdk-varargs")
    with pytest.raises(TaskDefinitionError, match=r"\*items"):

        @app.task
        def total(*items: int) -> int:
            return sum(items)


def test_bind_validates_and_coerces_named_arguments() -> None:
    app = Neutrino("sdk-bind")

    @app.task
    def scale(x: float, factor: int = 2) -> float:
        return x * factor

    assert scale.spec.bind({"x": "1.5"}) == {"x": 1.5, "factor": 2}
    with pytest.raises(pydantic.ValidationError) as info:
        scale.spec.bind({"x": "abc"})
    assert info.value.errors()[0]["loc"] == ("x",)
    with pytest.raises(pydantic.ValidationError):
        scale.spec.bind({"x": 1, "unknown": 3})


def test_load_tasks_reports_a_module_that_cannot_be_imported() -> None:
    with pytest.raises(TaskDefinitionError, match="cannot import task module 'no_such_module_here'"):
        load_tasks(["no_such_module_here"])


def test_sdk_imports_no_django() -> None:
    code = (
        "import sys, neutrino, neutrino.app, neutrino.progress, neutrino_site.cli; "
        "import workers.engine.executor; "
        "bad = [m for m in sys.modules if m == 'django' or m.startswith('django.')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_priority_and_unique_options_are_checked_when_the_task_is_defined() -> None:
    app = Neutrino("flow-options")

    @app.task(execution_mode="async", priority="low", unique_for_s=30, unique_on=["report"])
    def build(report: str, note: str = "") -> str:
        return report

    assert (build.spec.priority, build.spec.unique_for_s, build.spec.unique_on) == ("low", 30.0, ("report",))
    cases = [
        ({"execution_mode": "async", "priority": "urgent"}, "unknown priority 'urgent'"),
        ({"priority": "high"}, "sync tasks .* have no priority"),
        ({"unique_for_s": 10}, "unique_for_s is for queued tasks"),
        ({"execution_mode": "async", "unique_for_s": 0}, "unique_for_s must be a positive number"),
        ({"execution_mode": "async", "unique_for_s": 5, "unique_on": ["nope"]}, "unique_on names no argument"),
        ({"execution_mode": "async", "unique_on": ["report"]}, "unique_on needs unique_for_s"),
    ]
    for index, (options, message) in enumerate(cases):
        with pytest.raises(TaskDefinitionError, match=message):
            app.task(name=f"bad_{index}", **options)(lambda report: report)
