"""workers.engine.tracing in one process, with the SDK's in-memory exporter: spans, parents, links, and
nothing at all while tracing is off."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from workers.engine import tracing
from workers.engine.topology import decode_task_message, encode_task_message

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_off_it_makes_no_span_and_no_context() -> None:
    assert not tracing.enabled()
    assert not tracing.setup(enabled=False, service_name="test")
    with tracing.span("neutrino.submit", parent=TRACEPARENT) as span:
        assert span is None
        assert tracing.current_traceparent() == ""
    tracing.set_attributes(span, {"a": 1})  # a no-op on the None that `span` gave


def test_spans_continue_a_traceparent_and_nest(spans: InMemorySpanExporter) -> None:
    with tracing.span("outer", parent=TRACEPARENT, kind="consumer", attributes={"neutrino.attempt": 2}):
        inner_parent = tracing.current_traceparent()
        with tracing.span("inner"):
            pass
    inner, outer = spans.get_finished_spans()
    assert outer.context.trace_id == int("4bf92f3577b34da6a3ce929d0e0e4736", 16)
    assert outer.parent is not None and outer.parent.span_id == int("00f067aa0ba902b7", 16)
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id
    assert inner_parent.startswith(f"00-{outer.context.trace_id:032x}-{outer.context.span_id:016x}-")
    assert outer.attributes == {"neutrino.attempt": 2} and outer.kind.name == "CONSUMER"


def test_links_and_errors(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError), tracing.span("neutrino.retry", links=[TRACEPARENT, "not a traceparent"]):
        raise ValueError("boom")
    (retry,) = spans.get_finished_spans()
    assert [link.context.span_id for link in retry.links] == [int("00f067aa0ba902b7", 16)]
    assert retry.status.status_code.name == "ERROR"
    assert retry.parent is None  # no current span: a trace of its own


def test_the_task_message_carries_the_traceparent_only_when_there_is_one() -> None:
    fields = {"task_id": "7e1b6e0c-2f0a-4bb4-9df5-0f1f2f3f4f5f", "function": "f", "args": {}, "max_retries": 0,
              "timeout_ms": 1000}
    assert b"traceparent" not in encode_task_message(**fields)
    assert decode_task_message(encode_task_message(**fields)).traceparent == ""
    assert decode_task_message(encode_task_message(**fields, traceparent=TRACEPARENT)).traceparent == TRACEPARENT
    assert tracing.trace_id_of(TRACEPARENT) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert tracing.trace_id_of("garbage") == ""
