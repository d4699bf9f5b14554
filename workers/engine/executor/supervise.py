"""Watching the children that run tasks: killing them on a deadline, a cancel or shutdown, recycling
them after `max_tasks_per_child`, and turning a child's death into the caller's error.

Each function takes the shared `Pool`; a child taken out of the pool is handed to the spawner
thread (`Pool.replace`), which reaps it and starts another, so the caller is answered at once.
"""

from __future__ import annotations

from workers.engine.executor.errors import (
    ExecutorClosed,
    ExecutorError,
    TaskCancelled,
    TaskCrashed,
    TaskTimeout,
    describe_exit,
    signal_name,
)
from workers.engine.executor.pool import Child, Job, Pool
from workers.engine.executor.settings import EXIT_STATUS_WAIT_S


def release(pool: Pool, child: Child, task_id: str, function: str) -> None:
    """The child answered: put it back in the pool, or retire it; raise if it was killed meanwhile."""
    retire = False
    with pool.cond:
        if pool.running.get(task_id) is child:
            del pool.running[task_id]
        child.task_id = None
        reason = child.kill_reason
        if reason is None:
            child.tasks_done += 1
            limit = pool.settings.max_tasks_per_child
            if limit and child.tasks_done >= limit:
                retire = True
                child.kill_reason = "retire"
                pool.members.discard(child)
                pool.dying.add(child)
            else:
                pool.idle.append(child)
                pool.cond.notify()
                return
        else:
            pool.members.discard(child)
            pool.dying.add(child)
    if retire:
        child.ask_to_exit()
        pool.replace(child)
        return
    pool.replace(child)
    raise killed_error(reason, child, task_id, function)


def _kill_for(pool: Pool, child: Child, task_id: str, reason: str) -> str | None:
    """Kill `child` for `reason` and put a new one in its place; the reason of an earlier kill, if one came first."""
    with pool.lock:
        earlier = child.kill_reason
        if earlier is None:
            child.kill_reason = reason
            child.kill()
        _forget(pool, child, task_id)
    pool.replace(child)
    return earlier


def deadline_passed(pool: Pool, child: Child, task_id: str, function: str, timeout_ms: int) -> ExecutorError:
    """Kill the child running past its deadline; the error to raise (another kill may have come first)."""
    reason = _kill_for(pool, child, task_id, "timeout")
    if reason is not None:
        return killed_error(reason, child, task_id, function)
    return TaskTimeout(
        f"task {task_id} ({function}) ran past its {timeout_ms} ms deadline; "
        f"worker process {child.pid} was killed",
        task_id=task_id,
        timeout_ms=timeout_ms,
        worker_id=child.worker_id,
    )


def child_lost(pool: Pool, child: Child, task_id: str, function: str) -> ExecutorError:
    """The child's pipe closed while it ran a task: the error to raise, from why it died."""
    with pool.lock:
        reason = child.kill_reason
        if reason is None:
            child.kill_reason = "crashed"
        _forget(pool, child, task_id)
    if reason is not None:
        pool.replace(child)
        return killed_error(reason, child, task_id, function)
    exitcode = child.join(EXIT_STATUS_WAIT_S)
    if exitcode is None:  # it closed its pipe but lives on: it is of no use any more
        child.kill()
    pool.replace(child)
    return TaskCrashed(
        f"worker process {child.pid} {describe_exit(exitcode)} "
        f"while running task {task_id} ({function})",
        task_id=task_id,
        worker_id=child.worker_id,
        exitcode=exitcode,
        signal_name=signal_name(exitcode),
    )


def broke_protocol(pool: Pool, child: Child, task_id: str, function: str, why: str) -> ExecutorError:
    """The child sent something that is not a reply (the task wrote on the pipe): kill it, fail the task."""
    reason = _kill_for(pool, child, task_id, "crashed")
    if reason is not None:
        return killed_error(reason, child, task_id, function)
    return TaskCrashed(
        f"worker process {child.pid} sent the executor something that is not a reply while running task "
        f"{task_id} ({function}), and was killed: {why}",
        task_id=task_id,
        worker_id=child.worker_id,
        exitcode=None,
        signal_name=None,
    )


def killed_error(reason: str | None, child: Child, task_id: str, function: str) -> ExecutorError:
    """The error for a child that `cancel()` or `shutdown()` killed under a running task."""
    if reason == "cancel":
        return TaskCancelled(
            f"task {task_id} ({function}) was cancelled; worker process {child.pid} was killed",
            task_id=task_id,
            worker_id=child.worker_id,
        )
    return ExecutorClosed(
        f"the executor was shut down while task {task_id} ({function}) ran; "
        f"worker process {child.pid} was killed",
        task_id=task_id,
        worker_id=child.worker_id,
    )


def drop(pool: Pool, child: Child, reason: str, *, only_if_task: str | None = None) -> None:
    """Kill a child that cannot be used any more and have it replaced."""
    with pool.lock:
        if only_if_task is not None and child.task_id != only_if_task:
            return
        if child.kill_reason is None:
            child.kill_reason = reason
        child.kill()
        _forget(pool, child, child.task_id or "")
    pool.replace(child)


def cancel(pool: Pool, task_id: str) -> bool:
    """Kill the child running `task_id`, or cancel a call waiting for one; False when neither is here."""
    with pool.lock:
        child = pool.running.get(task_id)
        if child is not None:
            if child.kill_reason is None:
                child.kill_reason = "cancel"
                child.kill()
            return True
        if pool.waiting[task_id]:
            pool.cancel_waiting.add(task_id)
            pool.cond.notify_all()
            return True
        return False


def close(pool: Pool, timeout_s: float) -> None:
    """Close the pool: idle children are told to exit, running ones are killed, the spawner stops
    the rest within `timeout_s`. Only the first call does anything."""
    with pool.cond:
        if pool.closed:
            return
        pool.closed = True
        idle, pool.idle = pool.idle, []
        for child in idle:
            child.kill_reason = "retire"
        for child in pool.running.values():
            if child.kill_reason is None:
                child.kill_reason = "closed"
                child.kill()
        pool.cond.notify_all()
    for child in idle:
        child.ask_to_exit()
    pool.jobs.put(Job("stop", timeout_s=timeout_s))


def _forget(pool: Pool, child: Child, task_id: str) -> None:
    """Take a child out of the pool; the caller holds the lock."""
    if pool.running.get(task_id) is child:
        del pool.running[task_id]
    child.task_id = None
    pool.members.discard(child)
    pool.dying.add(child)
