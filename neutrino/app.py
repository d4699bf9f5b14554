"""The `Neutrino` app and its `@app.task` decorator.

A task is a plain Python function. The decorator records how it runs (mode,
pool, timeout, retries) in a `TaskSpec` and builds a pydantic model of its
arguments from the signature, so the gateway can answer a bad call with 422
and the worker child can coerce JSON back into the declared types.

Everything that cannot work is rejected when the decorator runs, not at the
first call: unknown modes, non-identifier names, duplicate names, timeouts
that are not positive, argument types that are not JSON-shaped.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import keyword
import math
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, ParamSpec, TypeVar, get_args, overload

import pydantic

from neutrino.limits import LimitError, Limits, limits_of
from neutrino.schedules import Schedule, ScheduleError, schedule_of

P = ParamSpec("P")
R = TypeVar("R")

ExecutionMode = Literal["sync", "async", "gpu"]
EXECUTION_MODES: tuple[ExecutionMode, ...] = get_args(ExecutionMode)
DEFAULT_POOL: dict[str, str] = {"sync": "fast", "async": "async", "gpu": "gpu"}
DEFAULT_TIMEOUT_MS: dict[str, int] = {"sync": 5_000, "async": 300_000, "gpu": 300_000}
# A queued task's priority, highest first: the order in which a worker with free slots takes them.
Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = get_args(Priority)


class TaskDefinitionError(ValueError):
    """A task or task module that cannot work as written."""


@dataclass(frozen=True)
class TaskSpec:
    """How one task runs. Built by `@app.task`; read by the gateway and the workers."""

    name: str
    fn: Callable[..., Any]
    execution_mode: str
    pool: str
    timeout_ms: int
    max_retries: int
    description: str
    args_model: type[pydantic.BaseModel]
    result_adapter: pydantic.TypeAdapter[Any] = field(repr=False)
    # `@app.task(schedule=...)`: the scheduler keeps a schedule named after the task (neutrino.schedules).
    schedule: Schedule | None = None
    # Not started this long after its submit: the task ends `expired` without running (queued tasks only).
    expires_s: float | None = None
    # [limits] concurrency per key and rate, across all workers and gateways (neutrino.limits).
    limits: Limits | None = None
    # `@app.task(priority=...)`: the default of its submits (a submit may give its own).
    priority: str = "normal"
    # `@app.task(unique_for_s=..., unique_on=...)`: a submit of the same function and arguments (those named
    # in `unique_on`; None: all of them) within this many seconds answers with the task the first one made.
    unique_for_s: float | None = None
    unique_on: tuple[str, ...] | None = None

    @property
    def is_coroutine(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    @property
    def runs_on_nats(self) -> bool:
        return self.execution_mode != "sync"

    def bind(self, args: dict[str, Any]) -> dict[str, Any]:
        """Validate JSON arguments and return the keyword arguments to call `fn` with.

        Raises `pydantic.ValidationError` naming each bad field.
        """
        model = self.args_model.model_validate(args)
        kwargs = {name: getattr(model, name) for name in type(model).model_fields}
        if model.model_extra:
            kwargs.update(model.model_extra)
        return kwargs


class TaskFunction(Generic[P, R]):
    """A registered task: still callable as the plain function, with its spec attached."""

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        self.__wrapped__ = spec.fn
        self.__name__ = spec.name
        self.__doc__ = spec.fn.__doc__

    @property
    def name(self) -> str:
        return self.spec.name

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return typing.cast(R, self.spec.fn(*args, **kwargs))

    def __repr__(self) -> str:
        return f"<TaskFunction {self.spec.name} mode={self.spec.execution_mode} pool={self.spec.pool}>"


# The class's name before it was told apart from a task's database row (`tasks_app.models.Task`): kept
# so that code importing `neutrino.Task` keeps working.
Task = TaskFunction


_APPS: list[Neutrino] = []

F = TypeVar("F", bound=Callable[[], Any])


@dataclass(frozen=True)
class StartHook:
    """A function run once in each worker child before its first task (`@app.on_worker_start`)."""

    fn: Callable[[], Any]
    pools: frozenset[str] | None  # None: the children of every pool, the HTTP servers' sync pool too

    @property
    def name(self) -> str:
        return _where(self.fn)

    def applies_to(self, pool: str) -> bool:
        return self.pools is None or pool in self.pools


class Neutrino:
    """A set of tasks. A task module makes one: `app = Neutrino()`."""

    def __init__(self, name: str = "neutrino") -> None:
        self.name = name
        self.tasks: dict[str, TaskSpec] = {}
        self.start_hooks: list[StartHook] = []
        _APPS.append(self)

    @overload
    def on_worker_start(self, fn: F, /) -> F: ...

    @overload
    def on_worker_start(self, *, pools: Iterable[str] | None = None) -> Callable[[F], F]: ...

    def on_worker_start(  # type: ignore[misc]  # the overloads carry the precise types
        self, fn: F | None = None, /, *, pools: Iterable[str] | None = None
    ) -> F | Callable[[F], F]:
        """Register a function to run once in each worker child process, before its first task.

        Use it to load something expensive once (a model onto the GPU, a tokenizer, a connection pool)
        and keep it resident across the tasks that child runs. A task reaches it through a module-level
        global that the hook fills::

            app = Neutrino()
            MODEL: dict[str, Any] = {}          # filled once per child by the hook below

            @app.on_worker_start(pools=["gpu"])
            def load_model() -> None:
                import torch
                MODEL["net"] = torch.load("net.pt").cuda().eval()

            @app.task(execution_mode="gpu")
            def infer(x: list[float]) -> list[float]:
                return MODEL["net"](torch.tensor(x).cuda()).tolist()

        When it runs: in each child as it starts, after the task modules are imported and before the
        child says it is ready, so the worker takes no task until every hook of its pool has run; a
        child that replaces a crashed or recycled one (NEUTRINO_MAX_TASKS_PER_CHILD) runs them again.
        Never in the worker's main process, so CUDA is first touched in a child (gpu pools start their
        children with "spawn", never fork). With `pools`, only children serving those pools run it;
        bare, every child does, the HTTP servers' sync children ("fast") included.
        A hook takes no arguments; an `async def` hook is run to completion. A hook that raises stops
        the worker from starting, with its traceback in the error. It must finish within the executor's
        start-up limit (120 s), like the import of the task modules.
        """
        chosen = None if pools is None else frozenset(_pool_names(pools))

        def register(func: F) -> F:
            if not callable(func):
                raise TaskDefinitionError(f"@app.on_worker_start expects a function, got {func!r}")
            try:
                inspect.signature(func).bind()
            except TypeError:
                raise TaskDefinitionError(
                    f"start-up hook {_where(func)} must be callable without arguments") from None
            except ValueError:  # no signature to read (a builtin): let it be
                pass
            self.start_hooks.append(StartHook(fn=func, pools=chosen))
            return func

        if fn is not None:
            return register(fn)
        return register

    @overload
    def task(self, fn: Callable[P, R], /) -> TaskFunction[P, R]: ...

    @overload
    def task(
        self,
        *,
        name: str | None = None,
        execution_mode: ExecutionMode = "sync",
        pool: str | None = None,
        timeout_ms: int | None = None,
        timeout_secs: float | None = None,
        max_retries: int = 0,
        schedule: str | dict[str, Any] | Schedule | None = None,
        expires_s: float | None = None,
        concurrency_key: str | None = None,
        max_concurrency: int | None = None,
        rate_limit: str | None = None,
        rate_limit_per_key: bool = False,
        on_rate_limit: Literal["wait", "reject"] = "wait",
        priority: Priority = "normal",
        unique_for_s: float | None = None,
        unique_on: Iterable[str] | None = None,
    ) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...

    def task(  # type: ignore[misc]  # the overloads carry the precise types
        self,
        fn: Callable[P, R] | None = None,
        /,
        *,
        name: str | None = None,
        execution_mode: ExecutionMode = "sync",
        pool: str | None = None,
        timeout_ms: int | None = None,
        timeout_secs: float | None = None,
        max_retries: int = 0,
        schedule: str | dict[str, Any] | Schedule | None = None,
        expires_s: float | None = None,
        concurrency_key: str | None = None,
        max_concurrency: int | None = None,
        rate_limit: str | None = None,
        rate_limit_per_key: bool = False,
        on_rate_limit: Literal["wait", "reject"] = "wait",
        priority: Priority = "normal",
        unique_for_s: float | None = None,
        unique_on: Iterable[str] | None = None,
    ) -> TaskFunction[P, R] | Callable[[Callable[P, R]], TaskFunction[P, R]]:
        """Register a function as a task; works bare (`@app.task`) and with options.

        execution_mode: "sync" runs at once and answers in the HTTP response;
            "async" and "gpu" are queued through NATS JetStream to a worker pool.
        pool: the worker pool; defaults to "fast", "async" or "gpu" by mode.
        timeout_ms / timeout_secs: the hard deadline (give one); defaults to
            5 s for sync tasks and 300 s otherwise. Past it the child is killed.
        max_retries: how many times a failed queued task is tried again.
        schedule: fire the task on its own: a cron expression ("*/5 * * * *", "@daily"), a dict of
            `neutrino.Schedule`'s fields, or a `Schedule(...)` (time zone, args, missed runs). The
            scheduler process keeps a schedule named after the task (docs/schedules.md). Async and
            gpu tasks only.
        expires_s: a queued task not started this many seconds after its submit ends `expired`
            without running (whether it waited in the queue, behind a retry's backoff or behind a
            delay); a submit's own `expires_s` / `expires_at` replaces it. Not for sync tasks.
        concurrency_key / max_concurrency: at most `max_concurrency` tasks with the same value of the
            argument `concurrency_key` (or of the function, without it) run at once across every worker;
            the others wait, without spending an attempt. Queued tasks only.
        rate_limit: "100/s", "30/m" or "1000/h" task starts for the whole cluster (per key with
            `rate_limit_per_key`); a task over it waits (`on_rate_limit="wait"`), or its submit is
            answered 429 with Retry-After (`on_rate_limit="reject"`, the only mode for sync tasks).
        priority: "high", "normal" (the default) or "low": with a backlog, a worker of the pool starts
            waiting high tasks before normal ones, and normal before low. A submit may give its own.
        unique_for_s: a submit of this task with the same arguments as one made less than this many
            seconds before answers with that task (`"deduplicated": true`) instead of queueing a second
            one, whichever gateway takes it. Queued tasks only.
        unique_on: the argument names that make two submits the same (default: all of them).
        """

        def register(func: Callable[P, R]) -> TaskFunction[P, R]:
            spec = _build_spec(
                func,
                name=name,
                execution_mode=execution_mode,
                pool=pool,
                timeout_ms=timeout_ms,
                timeout_secs=timeout_secs,
                max_retries=max_retries,
                expires_s=expires_s,
            )
            spec = _flow_options(spec, priority=priority, unique_for_s=unique_for_s, unique_on=unique_on)
            if schedule is not None:
                spec = dataclasses.replace(spec, schedule=_task_schedule(spec, schedule))
            try:
                limits = limits_of(task=spec.name, parameters=set(spec.args_model.model_fields),
                                   execution_mode=spec.execution_mode, concurrency_key=concurrency_key,
                                   max_concurrency=max_concurrency, rate_limit=rate_limit,
                                   rate_limit_per_key=rate_limit_per_key, on_rate_limit=on_rate_limit)
            except LimitError as exc:
                raise TaskDefinitionError(str(exc)) from None
            if limits is not None:
                spec = dataclasses.replace(spec, limits=limits)
            if spec.name in self.tasks:
                raise TaskDefinitionError(
                    f"task {spec.name!r} is defined twice "
                    f"({_where(self.tasks[spec.name].fn)} and {_where(func)})"
                )
            self.tasks[spec.name] = spec
            return TaskFunction(spec)

        if fn is not None:
            if not callable(fn):
                raise TaskDefinitionError(f"@app.task expects a function, got {fn!r}")
            return register(fn)
        return register


def _task_schedule(spec: TaskSpec, value: str | dict[str, Any] | Schedule) -> Schedule:
    """The task's schedule, checked as the server will: a good expression and zone, arguments that fit
    the signature, and a task that is queued (a sync task answers an HTTP caller; nobody waits for it)."""
    try:
        schedule = schedule_of(value)
    except ScheduleError as exc:
        raise TaskDefinitionError(f"task {spec.name!r}: bad schedule: {exc.message}") from None
    if not spec.runs_on_nats:
        raise TaskDefinitionError(
            f"task {spec.name!r}: only async and gpu tasks can have a schedule (a sync task answers an HTTP "
            "caller, and a schedule has none); use execution_mode='async'")
    try:
        spec.bind(dict(schedule.args))
    except pydantic.ValidationError as exc:
        raise TaskDefinitionError(f"task {spec.name!r}: the schedule's args do not fit its signature: {exc}") from None
    return schedule


def _flow_options(spec: TaskSpec, *, priority: str, unique_for_s: float | None,
                  unique_on: Iterable[str] | None) -> TaskSpec:
    """The spec with its priority and uniqueness, checked: queued tasks only, known argument names."""
    if priority not in PRIORITIES:
        raise TaskDefinitionError(f"task {spec.name!r}: unknown priority {priority!r}; "
                                  f"expected one of {', '.join(PRIORITIES)}")
    if priority != "normal" and not spec.runs_on_nats:
        raise TaskDefinitionError(f"task {spec.name!r}: sync tasks run at once and never wait in a queue, so "
                                  "they have no priority; drop it or make the task async")
    on: tuple[str, ...] | None = None
    if unique_on is not None:
        on = (unique_on,) if isinstance(unique_on, str) else tuple(unique_on)
        unknown = [name for name in on if name not in spec.args_model.model_fields]
        if unknown or not on:
            raise TaskDefinitionError(f"task {spec.name!r}: unique_on names no argument of the function: "
                                      f"{', '.join(map(repr, unknown)) or 'empty'}")
        if unique_for_s is None:
            raise TaskDefinitionError(f"task {spec.name!r}: unique_on needs unique_for_s (the window)")
    if unique_for_s is not None:
        if isinstance(unique_for_s, bool) or not isinstance(unique_for_s, (int, float)) or not (
            0 < unique_for_s < math.inf
        ):
            raise TaskDefinitionError(f"task {spec.name!r}: unique_for_s must be a positive number of seconds, "
                                      f"got {unique_for_s!r}")
        if not spec.runs_on_nats:
            raise TaskDefinitionError(f"task {spec.name!r}: unique_for_s is for queued tasks; a sync call "
                                      "answers its own caller at once")
    return dataclasses.replace(spec, priority=priority, unique_on=on,
                               unique_for_s=None if unique_for_s is None else float(unique_for_s))


def _pool_names(pools: Iterable[str]) -> list[str]:
    if isinstance(pools, str):
        pools = [pools]
    names = list(pools)
    for name in names:
        if not isinstance(name, str) or not name.isidentifier():
            raise TaskDefinitionError(f"@app.on_worker_start(pools=...): {name!r} is not a pool name")
    return names


def worker_start_hooks(pool: str) -> list[StartHook]:
    """The start-up hooks of the loaded task modules that apply to a child of `pool`, in registration order."""
    return [hook for app in _APPS for hook in app.start_hooks if hook.applies_to(pool)]


def _where(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"


def _build_spec(
    fn: Callable[..., Any],
    *,
    name: str | None,
    execution_mode: str,
    pool: str | None,
    timeout_ms: int | None,
    timeout_secs: float | None,
    max_retries: int,
    expires_s: float | None = None,
) -> TaskSpec:
    task_name = name if name is not None else getattr(fn, "__name__", "")
    if not isinstance(task_name, str) or not task_name.isidentifier() or keyword.iskeyword(task_name):
        raise TaskDefinitionError(
            f"task name {task_name!r} is not a Python identifier; names become URL paths "
            "and NATS subject tokens, so use letters, digits and underscores"
        )
    if execution_mode not in EXECUTION_MODES:
        raise TaskDefinitionError(
            f"task {task_name!r}: unknown execution_mode {execution_mode!r}; "
            f"expected one of {', '.join(EXECUTION_MODES)}"
        )
    pool_name = pool if pool is not None else DEFAULT_POOL[execution_mode]
    if not isinstance(pool_name, str) or not pool_name.isidentifier():
        raise TaskDefinitionError(f"task {task_name!r}: pool {pool_name!r} is not an identifier")
    if execution_mode == "sync" and pool is not None and pool != "fast":
        raise TaskDefinitionError(
            f"task {task_name!r}: sync tasks run on the fast pool; "
            f"use execution_mode='async' to run on pool {pool!r}"
        )
    if timeout_ms is not None and timeout_secs is not None:
        raise TaskDefinitionError(f"task {task_name!r}: give timeout_ms or timeout_secs, not both")
    if timeout_secs is not None:
        if isinstance(timeout_secs, bool) or not isinstance(timeout_secs, (int, float)):
            raise TaskDefinitionError(f"task {task_name!r}: timeout_secs must be a number")
        timeout_ms = round(timeout_secs * 1000)
    if timeout_ms is None:
        timeout_ms = DEFAULT_TIMEOUT_MS[execution_mode]
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms <= 0:
        raise TaskDefinitionError(f"task {task_name!r}: the timeout must be positive, got {timeout_ms!r} ms")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise TaskDefinitionError(f"task {task_name!r}: max_retries must be an integer >= 0")
    if execution_mode == "sync" and max_retries:
        raise TaskDefinitionError(
            f"task {task_name!r}: sync tasks answer in the HTTP response and are not retried; "
            "drop max_retries or make the task async"
        )
    if expires_s is not None:
        if isinstance(expires_s, bool) or not isinstance(expires_s, (int, float)) or not 0 < expires_s < math.inf:
            raise TaskDefinitionError(f"task {task_name!r}: expires_s must be a positive number of seconds, "
                                      f"got {expires_s!r}")
        if execution_mode == "sync":
            raise TaskDefinitionError(
                f"task {task_name!r}: sync tasks run at once and never wait, so they cannot expire; "
                "drop expires_s or make the task async"
            )
    args_model = _args_model(fn, task_name)
    try:
        hints = typing.get_type_hints(fn)
        result_adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(hints.get("return", Any))
    except Exception as exc:
        raise TaskDefinitionError(f"task {task_name!r}: its return type cannot be described as JSON: {exc}") from exc
    return TaskSpec(
        name=task_name,
        fn=fn,
        execution_mode=execution_mode,
        pool=pool_name,
        timeout_ms=timeout_ms,
        max_retries=max_retries,
        description=inspect.cleandoc(fn.__doc__ or ""),
        args_model=args_model,
        result_adapter=result_adapter,
        expires_s=None if expires_s is None else float(expires_s),
    )


def _args_model(fn: Callable[..., Any], task_name: str) -> type[pydantic.BaseModel]:
    try:
        signature = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise TaskDefinitionError(f"task {task_name!r}: cannot read its signature: {exc}") from exc
    fields: dict[str, Any] = {}
    extra: Literal["allow", "forbid"] = "forbid"
    for param in signature.parameters.values():
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            raise TaskDefinitionError(
                f"task {task_name!r}: *{param.name} cannot be called with JSON arguments; use named parameters"
            )
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TaskDefinitionError(
                f"task {task_name!r}: positional-only parameter {param.name!r} cannot be passed by name"
            )
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            extra = "allow"
            continue
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    try:
        return pydantic.create_model(
            f"{task_name}_args",
            __config__=pydantic.ConfigDict(extra=extra),
            **fields,
        )
    except Exception as exc:
        raise TaskDefinitionError(
            f"task {task_name!r}: its arguments cannot be described as JSON: {exc}"
        ) from exc


def load_tasks(modules: typing.Iterable[str]) -> dict[str, TaskSpec]:
    """Import the task modules and return every task they registered, by name.

    Raises `TaskDefinitionError` when a module cannot be imported or two apps
    define the same task name.
    """
    for module in modules:
        module = module.strip()
        if not module:
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise TaskDefinitionError(
                f"cannot import task module {module!r}: {exc}. "
                "Task modules must be importable from the current directory or the PYTHONPATH."
            ) from exc
    tasks: dict[str, TaskSpec] = {}
    for app in _APPS:
        for task_name, spec in app.tasks.items():
            if task_name in tasks and tasks[task_name].fn is not spec.fn:
                raise TaskDefinitionError(
                    f"task {task_name!r} is defined twice ({_where(tasks[task_name].fn)} and {_where(spec.fn)})"
                )
            tasks[task_name] = spec
    return tasks
