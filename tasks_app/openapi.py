"""OpenAPI paths for the registered tasks: one path per task, with its argument schema and vendor fields."""

from __future__ import annotations

import copy
from typing import Any

from tasks_app.registry import registered_tasks


def task_paths(generic: dict[str, Any]) -> dict[str, Any]:
    """`/api/<task>` for every task, built from the generic operation's responses.

    Carries the seed's vendor fields: x-neutrino-mode, x-neutrino-timeout (ms), x-neutrino-pool.
    """
    template = generic.get("post", {})
    paths: dict[str, Any] = {}
    for name, spec in sorted(registered_tasks().items()):
        args_schema = spec.args_model.model_json_schema(ref_template="#/components/schemas/{model}")
        args_schema.pop("title", None)
        operation = copy.deepcopy(template)
        operation.pop("parameters", None)
        operation.update(
            {
                "operationId": f"task_{name}",
                "summary": f"{'Run' if spec.execution_mode == 'sync' else 'Queue'} {name}",
                "description": spec.description or f"{spec.execution_mode} task on pool {spec.pool}",
                "tags": [f"{spec.execution_mode} tasks"],
                "x-neutrino-mode": spec.execution_mode,
                "x-neutrino-timeout": spec.timeout_ms,
                "x-neutrino-pool": spec.pool,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"args": args_schema},
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
            responses.pop("200", None)
            responses.pop("504", None)
            responses["202"] = {
                "description": "Queued; poll poll_url for the result",
                "content": {"application/json": {"schema": {
                    "type": "object",
                    "properties": {
                        "task_id": {"type": "string", "format": "uuid"},
                        "status": {"type": "string"},
                        "poll_url": {"type": "string"},
                    },
                    "required": ["task_id", "status", "poll_url"],
                }}},
            }
        paths[f"/api/{name}"] = {"post": operation}
    return paths
