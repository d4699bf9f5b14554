"""Fan-out: groups of tasks with one callback, and chains (`tasks_app.services.fan_in` fires them).

- `group_submit`: one queued task per item, all or nothing; once every one has finished, the callback
  `then` runs with `results=[...]` (item order; None where a member did not complete). Policy `all`:
  only if all completed, else the callback ends `failed` (GroupFailed) without running. Policy `collect`:
  it always runs, with `failures=[{index, task_id, status, error_type, error}, ...]` too.
- `chain_submit`: steps one after another; each step after the first gets the previous one's result as
  its named argument `result`. A step that does not complete ends every later step `failed`, unrun.
- `group_cancel`: the members not finished yet are cancelled and the callback ends cancelled, unrun.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from neutrino.app import TaskSpec
from tasks_app.core.errors import InvalidArguments
from tasks_app.core.ports import Ports
from tasks_app.models import ACTIVE_STATUSES, GroupPolicy, Task, TaskCreator, TaskGroup
from tasks_app.services import fan_in
from tasks_app.services import submit as submissions
from tasks_app.services.tasks import task_validate_args, tasks_cancel_many

GROUP_MAX_ITEMS = 100_000
INSERT_CHUNK = 1_000  # rows per INSERT statement batch and per pipelined publish
CHAIN_MAX_STEPS = 100


def step_of(spec: TaskSpec, args: dict[str, Any]) -> fan_in.Step:
    return fan_in.Step(function=spec.name, args=args, pool=spec.pool, execution_mode=spec.execution_mode,
                       timeout_ms=spec.timeout_ms, max_retries=spec.max_retries)


def _check_queued(spec: TaskSpec, role: str) -> None:
    if not spec.runs_on_nats:
        raise InvalidArguments(f"{role} {spec.name} is a sync task; groups and chains run queued tasks only",
                               task=spec.name)


def _check_takes(spec: TaskSpec, role: str, names: Sequence[str], args: dict[str, Any]) -> dict[str, Any]:
    """`args` are valid for `spec` once the fan-in adds `names` (checked by name: their values come later)."""
    missing = [name for name in names if name not in spec.args_model.model_fields]
    if missing:
        raise InvalidArguments(
            f"{role} {spec.name} must take the argument(s) {', '.join(missing)}: the fan-in passes them",
            task=spec.name, fields=[{"field": "then", "message": f"{spec.name} has no argument {name}"}
                                    for name in missing])
    given = set(args) & set(names)
    if given:
        raise InvalidArguments(f"{role} {spec.name}: {', '.join(sorted(given))} is passed by the fan-in; "
                               "do not give it", task=spec.name)
    # Checked by name only: the arguments are bound (and their types checked) when the step runs.
    unknown = set(args) - set(spec.args_model.model_fields)
    if unknown:
        raise InvalidArguments(f"{role} {spec.name} has no argument(s) {', '.join(sorted(unknown))}",
                               task=spec.name, fields=[{"field": name, "message": "unknown argument"}
                                                       for name in sorted(unknown)])
    return dict(args)


def group_submit(*, ports: Ports, spec: TaskSpec, items: list[Any], creator: TaskCreator,
                 then: TaskSpec | None = None, then_args: dict[str, Any] | None = None,
                 policy: str = GroupPolicy.ALL, parent_id: uuid.UUID | None = None) -> tuple[TaskGroup, list[str]]:
    """Queue one task of `spec` per item; `then` runs once all have finished. The group and its task ids.

    All items are validated before any row is written; the group and its rows are one transaction.
    """
    _check_queued(spec, "the group's function")
    if policy not in GroupPolicy.values:
        raise InvalidArguments(f"policy must be one of {', '.join(GroupPolicy.values)}, not {policy!r}",
                               field="policy")
    if not items:
        raise InvalidArguments("'items' is empty; send at least one {\"args\": {...}}", field="items")
    if len(items) > GROUP_MAX_ITEMS:
        raise InvalidArguments(f"a group holds at most {GROUP_MAX_ITEMS} items, this one has {len(items)}",
                               field="items", limit=GROUP_MAX_ITEMS)
    all_args = [submissions.item_args(spec=spec, index=index, item=item) for index, item in enumerate(items)]
    then_step = None
    if then is not None:
        _check_queued(then, "the callback")
        names = ["results", "failures"] if policy == GroupPolicy.COLLECT else ["results"]
        then_step = step_of(then, _check_takes(then, "the callback", names, then_args or {}))
        submissions.check_route(ports=ports, spec=then)
    submissions.check_route(ports=ports, spec=spec)
    submissions.pool_check_backlog(ports=ports, spec=spec, adding=len(items))
    group = TaskGroup(function_name=spec.name, size=len(items), then_function=then.name if then else "",
                      then_step=then_step.as_json() if then_step else None, policy=policy, parent_id=parent_id,
                      created_at=timezone.now(), created_by=creator.label, created_by_token_id=creator.token_id)
    return group, _insert_and_queue(ports, spec, group, all_args, creator)


def _insert_and_queue(ports: Ports, spec: TaskSpec, group: TaskGroup, all_args: list[dict[str, Any]],
                      creator: TaskCreator) -> list[str]:
    ids: list[uuid.UUID] = []
    with transaction.atomic():
        group.save(force_insert=True)
        for start in range(0, len(all_args), INSERT_CHUNK):
            ids += submissions.tasks_insert_members(spec=spec, creator=creator,
                                                    all_args=all_args[start:start + INSERT_CHUNK],
                                                    group_id=group.id, parent_id=group.parent_id, first_index=start)
    for start in range(0, len(ids), INSERT_CHUNK):
        submissions.tasks_queue_members(ports=ports, spec=spec, rows=list(zip(
            ids[start:start + INSERT_CHUNK], all_args[start:start + INSERT_CHUNK], strict=True)))
    return [str(task_id) for task_id in ids]


def chain_submit(*, ports: Ports, steps: list[tuple[TaskSpec, dict[str, Any]]], creator: TaskCreator,
                 parent_id: uuid.UUID | None = None) -> tuple[TaskGroup, str]:
    """Run the steps one after another, each after the first with `result=` the previous one's result.

    The chain is its first group (one member: the first step); its id names the chain. Returns it and the
    first step's task id.
    """
    if not 2 <= len(steps) <= CHAIN_MAX_STEPS:
        raise InvalidArguments(f"a chain has 2 to {CHAIN_MAX_STEPS} steps, this one has {len(steps)}",
                               field="steps")
    first_spec, first_args = steps[0]
    _check_queued(first_spec, "step 0")
    first_args = task_validate_args(spec=first_spec, args=first_args)
    later = []
    for index, (spec, args) in enumerate(steps[1:], start=1):
        _check_queued(spec, f"step {index}")
        later.append(step_of(spec, _check_takes(spec, f"step {index}", ["result"], args)).as_json())
        submissions.check_route(ports=ports, spec=spec)
    submissions.check_route(ports=ports, spec=first_spec)
    group_id = uuid.uuid4()
    group = TaskGroup(id=group_id, function_name=first_spec.name, size=1, then_function=later[0]["function"],
                      then_step=later[0], chain_id=group_id, chain_step=0, chain_rest=later[1:],
                      parent_id=parent_id, created_at=timezone.now(), created_by=creator.label,
                      created_by_token_id=creator.token_id)
    return group, _insert_and_queue(ports, first_spec, group, [first_args], creator)[0]


def group_cancel(*, ports: Ports, group: TaskGroup) -> int:
    """Cancel the group's unfinished members; its callback (a chain's later steps) ends cancelled, unrun.
    How many members were cancelled (a finished group: 0, and nothing changes)."""
    if group.chain_id is not None:  # a chain: the step that runs now is the open group of the chain
        group = TaskGroup.objects.filter(chain_id=group.chain_id, fired_at__isnull=True).first() or group
    TaskGroup.objects.filter(id=group.id, fired_at__isnull=True).update(cancel_requested=True)
    ids = list(Task.objects.filter(group_id=group.id, status__in=ACTIVE_STATUSES).values_list("id", flat=True))
    cancelled = 0
    for start in range(0, len(ids), INSERT_CHUNK):
        cancelled += len(tasks_cancel_many(ports=ports, task_ids=ids[start:start + INSERT_CHUNK]))
    fan_in.group_fire_if_done(ports=ports, group_id=group.id)  # none was left to cancel: fire it cancelled now
    return cancelled
