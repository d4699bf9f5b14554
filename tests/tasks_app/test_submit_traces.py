"""The submit's spans in process (the SDK's in-memory exporter): the row keeps the submit's traceparent, and
the JetStream message carries the publish's, which the worker continues (tests/neutrino_site/test_traces.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tasks_app.models import Task
from workers.engine import tracing
from workers.engine.topology import STREAM

pytestmark = pytest.mark.django_db(transaction=True)


def first_message(private_nats: Any) -> dict[str, Any]:
    async def get(js: Any) -> bytes:
        return bytes((await js.get_msg(STREAM, seq=1)).data)

    body: dict[str, Any] = json.loads(private_nats.run(get))
    return body


def test_a_submit_keeps_its_trace_on_the_row_and_in_the_message(client, default_pools, private_nats,
                                                                 spans: InMemorySpanExporter) -> None:
    with tracing.span("request"):
        response = client.post("/api/wk_noop", json.dumps({"args": {"n": 1}}), content_type="application/json")
    assert response.status_code == 202, response.content
    task_id = response.json()["task_id"]
    by_name = {span.name: span for span in spans.get_finished_spans()}
    request, submit, publish = by_name["request"], by_name["neutrino.submit"], by_name["neutrino.publish"]
    assert submit.parent is not None and submit.parent.span_id == request.context.span_id
    assert publish.parent is not None and publish.parent.span_id == submit.context.span_id
    assert submit.attributes is not None and submit.attributes["neutrino.task_id"] == task_id
    trace_id = f"{request.context.trace_id:032x}"
    # The last field holds the trace flags (sampled, and the SDK's "random trace id" bit).
    assert Task.objects.get(id=task_id).traceparent.startswith(f"00-{trace_id}-{submit.context.span_id:016x}-")
    message = first_message(private_nats)
    assert message["task_id"] == task_id
    assert message["traceparent"].startswith(f"00-{trace_id}-{publish.context.span_id:016x}-")


def test_with_tracing_off_the_row_and_the_message_carry_no_trace(client, default_pools, private_nats) -> None:
    response = client.post("/api/wk_noop", json.dumps({"args": {"n": 2}}), content_type="application/json")
    assert response.status_code == 202, response.content
    assert Task.objects.get(id=response.json()["task_id"]).traceparent == ""
    assert "traceparent" not in first_message(private_nats)
