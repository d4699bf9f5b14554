"""OpenAPI paths for the registered tasks: one path per task, with its argument schema and vendor fields."""

from __future__ import annotations

import copy
from typing import Any

from tasks_app.core.registry import registered_tasks

IDEMPOTENCY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Any unique string up to 128 printable ASCII characters (a UUID). Repeating a submit with "
                   "the same key within 24 hours answers with the task the first one made, never a second task.",
    "schema": {"type": "string", "maxLength": 128},
}
TASK_ID_SCHEMA = {"type": "string", "format": "uuid"}
_TIME = {"type": "string", "format": "date-time"}
# A queued task's timing, beside "args" (a batch's, beside "items", applies to every item).
TIMING_PROPERTIES: dict[str, Any] = {
    "run_at": {**_TIME, "description": "Queue it at this time (ISO 8601 with a UTC offset); until then it is "
                                       "`scheduled`. A time past queues it at once. Not with delay_s."},
    "delay_s": {"type": "number", "minimum": 0, "description": "Queue it this many seconds from now. Not with run_at."},
    "expires_at": {**_TIME, "description": "Not started by this time (ISO 8601 with a UTC offset), it ends "
                                           "`expired` without running. Not with expires_s."},
    "expires_s": {"type": "number", "exclusiveMinimum": 0,
                  "description": "Not started this many seconds after the submit (not after run_at), it ends "
                                 "`expired`. Defaults to the task's own expires_s. Not with expires_at."},
}

# A queued task's place in its pool's queue and its uniqueness (tasks_app.services.flow).
PRIORITY_PROPERTY: dict[str, Any] = {
    "type": "string", "enum": ["high", "normal", "low"],
    "description": "With a backlog, a pool's workers start high tasks first, then normal, then low. "
                   "Defaults to the task's own priority.",
}
UNIQUE_PROPERTY: dict[str, Any] = {
    "type": "number", "exclusiveMinimum": 0,
    "description": "A submit of this task with the same arguments within this many seconds answers 200 with "
                   "the first task and `\"deduplicated\": true`. Defaults to the task's own unique_for_s.",
}


# A submit's optional webhook: the task's final state is POSTed there, signed (README "Alerts and callbacks").
CALLBACK_URL_SCHEMA = {"type": "string", "format": "uri", "maxLength": 2000,
                       "description": "POSTed the task's final state once it finishes (a signed webhook); "
                                      "hosts are limited by NEUTRINO_WEBHOOK_ALLOWED_HOSTS"}


def task_paths(generic: dict[str, Any], generic_batch: dict[str, Any] | None = None) -> dict[str, Any]:
    """`/api/<task>` for every task (and `/api/<task>/batch` for queued ones), built from the generic
    operations' responses.

    Carries the seed's vendor fields: x-neutrino-mode, x-neutrino-timeout (ms), x-neutrino-pool.
    """
    template = generic.get("post", {})
    batch_template = (generic_batch or {}).get("post", {})
    paths: dict[str, Any] = {}
    for name, spec in sorted(registered_tasks().items()):
        args_schema = spec.args_model.model_json_schema(ref_template="#/components/schemas/{model}")
        args_schema.pop("title", None)
        operation = copy.deepcopy(template)
        operation["parameters"] = [IDEMPOTENCY_PARAMETER]
        operation.update(
            {
                "operationId": f"task_{name}",
                "summary": f"{'Run' if spec.execution_mode == 'sync' else 'Queue'} {name}",
                "description": spec.description or f"{spec.execution_mode} task on pool {spec.pool}",
                **_task_fields(spec),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"args": args_schema, "callback_url": CALLBACK_URL_SCHEMA,
                                               **(TIMING_PROPERTIES if spec.runs_on_nats else {}),
                                               **({"priority": PRIORITY_PROPERTY, "unique_for_s": UNIQUE_PROPERTY}
                                                  if spec.runs_on_nats else {})},
                                "required": ["args"],
                                "additionalProperties": False,
                            }
                        }
                    },
                },
            }
        )
        responses = {str(code): value for code, value in operation.get("responses", {}).items()}
        operation["responses"] = responses
        result_schema = spec.result_adapter.json_schema()
        if spec.execution_mode == "sync":
            responses.pop("202", None)
            responses["200"] = {
                "description": "The task ran; its result",
                "content": {"application/json": {"schema": {
                    "type": "object",
                    "properties": {
                        "task_id": {"type": "string", "format": "uuid"},
                        "status": {"type": "string", "enum": ["completed"]},
                        "result": result_schema,
                        "duration_ms": {"type": "number"},
                    },
                    "required": ["task_id", "status", "result", "duration_ms"],
                }}},
            }
        else:
            responses.pop("504", None)
            responses["200"] = {
                "description": "A repeat of a submit with the same Idempotency-Key: the task the first one made",
                "content": {"application/json": {"schema": {
                    "type": "object",
                    "properties": {"task_id": TASK_ID_SCHEMA, "status": {"type": "string"},
                                   "poll_url": {"type": "string"}},
                    "required": ["task_id", "status", "poll_url"],
                }}},
            }
            responses["202"] = {
                "description": "Queued (or `scheduled` until its run_at); poll poll_url for the result",
                "content": {"application/json": {"schema": {
                    "type": "object",
                    "properties": {
                        "task_id": {"type": "string", "format": "uuid"},
                        "status": {"type": "string", "enum": ["scheduled", "pending", "queued"]},
                        "run_at": _TIME,
                        "expires_at": _TIME,
                        "poll_url": {"type": "string"},
                    },
                    "required": ["task_id", "status", "poll_url"],
                }}},
            }
        paths[f"/api/{name}"] = {"post": operation}
        if spec.runs_on_nats and batch_template:
            paths[f"/api/{name}/batch"] = {"post": _batch_operation(batch_template, name, spec, args_schema)}
    return paths


def _task_fields(spec: Any) -> dict[str, Any]:
    """The tag and the seed's vendor fields every operation of a task carries."""
    return {
        "tags": [f"{spec.execution_mode} tasks"],
        "x-neutrino-mode": spec.execution_mode,
        "x-neutrino-timeout": spec.timeout_ms,
        "x-neutrino-pool": spec.pool,
    }


def _batch_operation(template: dict[str, Any], name: str, spec: Any, args_schema: dict[str, Any]) -> dict[str, Any]:
    operation = copy.deepcopy(template)
    operation["parameters"] = [IDEMPOTENCY_PARAMETER]
    operation.update(
        {
            "operationId": f"task_{name}_batch",
            "summary": f"Queue many {name} tasks, all or nothing",
            **_task_fields(spec),
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "items": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {
                                        "type": "object",
                                        "properties": {"args": args_schema},
                                        "required": ["args"],
                                        "additionalProperties": False,
                                    },
                                },
                                **TIMING_PROPERTIES,
                                "priority": PRIORITY_PROPERTY,
                            },
                            "required": ["items"],
                            "additionalProperties": False,
                        }
                    }
                },
            },
        }
    )
    operation["responses"] = {str(code): value for code, value in operation.get("responses", {}).items()}
    return operation
