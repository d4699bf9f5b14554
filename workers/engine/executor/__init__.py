"""A pool of pre-started child processes that runs task functions with hard deadlines.

    executor = Executor(ExecutorSettings(task_modules=("myapp.tasks",), processes=4))
    result = executor.run(task_id="t-1", function="add", args={"a": 1, "b": 2}, timeout_ms=5_000)
    result.value        # 3
    executor.shutdown()

How it works. `start()` (or the first `run()`) starts `processes` children through a long-lived
spawner thread. Each child imports the task modules once (`neutrino.app.load_tasks`) and then waits
on its own duplex Pipe. `run()` takes an idle child, sends it `(task_id, function, args, timeout_ms)`,
and waits on the pipe with `poll(remaining)`. Progress reports from the task arrive on the same pipe
and are handed to `on_progress` in the calling thread. Children whose task was killed, that crashed,
or that ran `max_tasks_per_child` tasks are replaced in the background, so the caller is answered
at once and the pool heals itself.

Deadlines. `timeout_ms` bounds two separate waits:
  * waiting for an idle child: past `timeout_ms` the call raises `TaskTimeout` (stage "queue",
    message "no free worker process within ... ms"); nothing was started and nothing is killed;
  * the run itself, from the moment the task is handed to the child: the argument binding, the
    function and the JSON encoding of its result. Past `timeout_ms` the parent SIGKILLs the child
    and raises `TaskTimeout` (stage "run") within a few milliseconds of the deadline.
  So a call returns within about 2 x `timeout_ms`, and a task always gets its whole `timeout_ms` to
  run, however long it queued.

What the mechanism can do: a child process can be killed, whatever it is doing - a C extension
spinning without releasing the GIL, a deadlock, `time.sleep(3600)`. What it cannot do:
  * it kills only the child. Processes the task itself started (subprocess, multiprocessing) are not
    in the kill, unless they die with their parent on their own;
  * a killed task runs no `finally:` blocks, context managers or atexit handlers; files it was
    writing stay half-written. Locks held by the OS or a server on its behalf (file locks, database
    connections) are released when the process dies;
  * it sets no memory or CPU limit. Those are the operating system's job (container limits, cgroups,
    `ulimit`); a child the kernel's OOM killer ends is reported as `TaskCrashed` with SIGKILL;
  * a child serves many tasks in turn, so module-level state survives from one task to the next;
    `max_tasks_per_child` bounds how long (and how much a leak can grow);
  * it cannot tell a task that is about to finish from one that never will: the deadline is hard.

Threads and processes. An `Executor` is safe to use from many threads at once (gunicorn gthread
request threads, `asyncio.to_thread`). Every blocking wait has a timeout. It is not fork-safe: create
it in the process that uses it (after gunicorn forks its workers), never before a fork. Children are
started with "forkserver" (default: task modules this process has imported before `start()` are
preloaded in the fork server, so a new child costs a fork, not an import) or "spawn"; never plain
"fork", which is unsafe with threads and CUDA. The fork server is one per parent process and its
preload list is fixed when it first starts, so a second executor in the same process gets the first
one's preload (its children import their own modules, and see the preloaded tasks too: task names
must be unique across them). As with any "spawn"/"forkserver" child, each child runs the parent's
main script as `__mp_main__`, so that script needs its `if __name__ == "__main__":` guard.

Children ignore SIGINT (Ctrl-C belongs to the parent, which shuts them down). On Linux the kernel
kills them when their parent dies, even when the parent was killed with SIGKILL (PR_SET_PDEATHSIG;
under "forkserver" the fork server exits with the parent and takes its children along). Idle children
also exit when their pipe closes.

Environment. A child keeps only an allow-list of its parent's environment (`workers.engine.child_env`:
no database URL, secret key or NATS credentials; `NEUTRINO_CHILD_ENV` names more), before any task code.

Data. Arguments travel pickled from the parent to the child; everything the child sends back is JSON,
never unpickled (task code runs there and could write on the pipe). The result travels back as JSON text
(`json.dumps(..., allow_nan=False)`: a set, a datetime or a pydantic model is refused, not converted)
and a result over `max_result_bytes` bytes of UTF-8 fails with `ResultError`, never truncated.
With `spool_dir` set (pool workers), bytes, a `neutrino.File` and JSON over `inline_result_bytes` come
back as a file in that directory instead, up to `max_object_bytes`, and the reply carries a small marker
(`workers.engine.spool`); the caller stores the file (`workers.engine.objects`). Without it (the sync pool)
results travel as above.

Errors, all `ExecutorError` with `.task_id`, `.worker_id` (when a child was involved) and a message:

    ExecutorError
     +-- TaskTimeout      deadline passed (.timeout_ms, .stage "queue" or "run"); a running child was killed
     +-- TaskCrashed      the child died (.exitcode, .signal_name): segfault, os._exit, OOM kill
     +-- TaskCancelled    cancel(task_id) killed it, or cancelled it while it waited for a child
     +-- TaskRaised       the function raised (.exc_type, .error, .traceback); bad args: "ValidationError"
     +-- ResultError      the result is not JSON-serialisable or is over max_result_bytes
     +-- UnknownTask      no task of that name in the child's task modules
     +-- ExecutorClosed   shutdown() ran before or during the call

`start()` raises `neutrino.app.TaskDefinitionError` when a child cannot import the task modules.

The package by job: `settings` (ExecutorSettings and the fixed limits), `errors` (the error classes,
`describe_failure`), `pool` (the shared state: children as the parent sees them), `run` (the
`Executor` and its call path), `supervise` (deadline and cancel kills, recycling, deaths turned into
errors) and `spawn` (the thread that starts, replaces and reaps children).
"""

from workers.engine.executor.errors import (
    ExecutorClosed,
    ExecutorError,
    Failure,
    ResultError,
    TaskCancelled,
    TaskCrashed,
    TaskRaised,
    TaskTimeout,
    UnknownTask,
    describe_failure,
)
from workers.engine.executor.run import Executor, RunResult
from workers.engine.executor.settings import ExecutorSettings

__all__ = [
    "Executor",
    "ExecutorClosed",
    "ExecutorError",
    "ExecutorSettings",
    "Failure",
    "ResultError",
    "RunResult",
    "TaskCancelled",
    "TaskCrashed",
    "TaskRaised",
    "TaskTimeout",
    "UnknownTask",
    "describe_failure",
]
