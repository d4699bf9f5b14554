"""Traces across the real processes: a caller's span -> `neutrino serve --mode http` -> NATS -> a pool worker.

The caller traces in this process (an SDK provider with an in-memory exporter); the server and the worker
export over OTLP/HTTP to a receiver in this test (tests/otlp_receiver.py), as they would to a collector.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from neutrino import NeutrinoClient
from tests.conftest import WorkerProcess
from tests.otlp_receiver import ReceivedSpan, Receiver, otlp_receiver
from tests.servers import http_server, neutrino, request, server_env, wait_for

pytestmark = pytest.mark.timeout(180)

WORKER_SPANS = ("neutrino.queue_wait", "neutrino.attempt", "neutrino.claim", "neutrino.run", "neutrino.complete")


@dataclass
class Stack:
    base_url: str
    port: int
    receiver: Receiver
    tmp: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, nats_server) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("traces")
    with otlp_receiver() as receiver, server_env(
        tmp, NEUTRINO_TASK_MODULES="tests.fixtures.worker_tasks", NEUTRINO_NATS_URL=nats_server.url,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_BSP_SCHEDULE_DELAY="50",
        NEUTRINO_TRACE_URL_TEMPLATE="https://jaeger.example/trace/{trace_id}",
        NEUTRINO_RETRY_BACKOFF_S="0.2", NEUTRINO_ACK_WAIT_S="5", NEUTRINO_LOG_LEVEL="INFO", PYTHONUNBUFFERED="1",
    ) as env:
        assert neutrino("manage", "migrate", "-v0", env=env).returncode == 0
        argv = [sys.executable, "-m", "neutrino_site.cli", "serve", "--mode", "nats", "--pool", "async",
                "--nats-url", nats_server.url, "--concurrency", "2"]
        worker = WorkerProcess(argv, env, tmp / "worker.log").wait_ready()
        try:
            with http_server(env) as port:
                yield Stack(base_url=f"http://127.0.0.1:{port}", port=port, receiver=receiver, tmp=tmp)
        finally:
            worker.stop()
            print(f"----- worker -----\n{worker.log()}")


def spans_of(receiver: Receiver, trace_id: str, *names: str, count: int = 1) -> dict[str, list[ReceivedSpan]]:
    """The received spans of `trace_id`, by name, once each of `names` has arrived `count` times."""
    def ready() -> dict[str, list[ReceivedSpan]] | None:
        by_name: dict[str, list[ReceivedSpan]] = {}
        for span in receiver.snapshot():
            if span.trace_id == trace_id:
                by_name.setdefault(span.name, []).append(span)
        return by_name if all(len(by_name.get(name, [])) >= count for name in names) else None

    try:
        return wait_for(ready, timeout_s=30, what=f"spans {names} of trace {trace_id}")
    except AssertionError:
        print("received:", *(f"{s.service} {s.name} {s.trace_id} {s.parent_id}" for s in receiver.snapshot()),
              sep="\n  ")
        raise


def one(spans: dict[str, list[ReceivedSpan]], name: str) -> ReceivedSpan:
    assert len(spans[name]) == 1, spans[name]
    return spans[name][0]


def test_a_queued_task_is_one_trace_from_the_callers_span_to_the_completion(stack: Stack) -> None:
    caller_spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(caller_spans))
    with NeutrinoClient(stack.base_url, timeout=30) as client:
        with provider.get_tracer("test").start_as_current_span("caller") as caller:
            handle = client.call_async("wk_add", a=2, b=3)
        assert handle.wait(timeout=30) == 5
    trace_id = format(caller.get_span_context().trace_id, "032x")
    caller_id = format(caller.get_span_context().span_id, "016x")
    spans = spans_of(stack.receiver, trace_id, "HTTP POST /api/<task_name>", "neutrino.submit", "neutrino.publish",
                     *WORKER_SPANS)

    http = one(spans, "HTTP POST /api/<task_name>")
    submit, publish = one(spans, "neutrino.submit"), one(spans, "neutrino.publish")
    attempt = one(spans, "neutrino.attempt")
    assert http.parent_id == caller_id and http.service == "neutrino-http"
    assert http.attributes["http.response.status_code"] == 202
    assert submit.parent_id == http.span_id and submit.attributes["neutrino.task_id"] == handle.id
    assert publish.parent_id == submit.span_id and publish.service == "neutrino-http"
    assert one(spans, "neutrino.queue_wait").parent_id == publish.span_id
    assert attempt.parent_id == publish.span_id and attempt.service == "neutrino-worker-async"
    for name in ("neutrino.claim", "neutrino.run", "neutrino.complete"):
        assert one(spans, name).parent_id == attempt.span_id, name
    run = one(spans, "neutrino.run")
    assert run.attributes == {"neutrino.task_id": handle.id, "neutrino.function": "wk_add",
                              "neutrino.pool": "async", "neutrino.attempt": 1}
    assert one(spans, "neutrino.complete").attributes["neutrino.outcome"] == "task_mark_completed"
    # The caller's own span is the one the server continued (its exporter holds it, not the receiver).
    assert [span.name for span in caller_spans.get_finished_spans()] == ["caller"]


def test_an_incoming_traceparent_is_continued(stack: Stack) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    status, raw = request(stack.port, "POST", "/api/wk_add", {"args": {"a": 1, "b": 1}},
                          headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
    assert status == 202, raw
    body = json.loads(raw)
    spans = spans_of(stack.receiver, trace_id, "HTTP POST /api/<task_name>", "neutrino.run")
    assert one(spans, "HTTP POST /api/<task_name>").parent_id == parent_id
    assert one(spans, "neutrino.run").attributes["neutrino.task_id"] == body["task_id"]


def test_every_attempt_of_a_retried_task_is_a_child_of_its_publish(stack: Stack) -> None:
    counter = stack.tmp / "flaky-counter"
    with NeutrinoClient(stack.base_url, timeout=30) as client:
        handle = client.call_async("wk_flaky", counter_path=str(counter), fail_times=1)
        handle.wait(timeout=30)
        trace_id = wait_for(lambda: next((s.trace_id for s in stack.receiver.snapshot()
                                          if s.name == "neutrino.submit"
                                          and s.attributes.get("neutrino.task_id") == handle.id), None),
                            timeout_s=30, what="the submit span")
    spans = spans_of(stack.receiver, trace_id, "neutrino.attempt", "neutrino.run", count=2)
    publish = one(spans, "neutrino.publish")
    attempts = sorted(spans["neutrino.attempt"], key=lambda span: span.attributes["neutrino.attempt"])
    assert [span.attributes["neutrino.attempt"] for span in attempts] == [1, 2]
    assert all(span.parent_id == publish.span_id for span in attempts)
    runs = sorted(spans["neutrino.run"], key=lambda span: span.attributes["neutrino.attempt"])
    assert runs[0].status_code == 2 and runs[1].status_code != 2  # 2: STATUS_CODE_ERROR
    assert [run.parent_id for run in runs] == [attempt.span_id for attempt in attempts]
    outcomes = sorted(span.attributes["neutrino.outcome"] for span in spans["neutrino.complete"])
    assert outcomes == ["task_mark_completed", "task_mark_retrying"]


def test_a_users_retry_links_to_the_trace_of_the_task_it_retries(stack: Stack) -> None:
    with NeutrinoClient(stack.base_url, timeout=30) as client:
        first = client.call_async("wk_add", a=20, b=22)
        assert first.wait(timeout=30) == 42
        retry = first.retry()
        assert retry.wait(timeout=30) == 42
    def both_submits() -> dict[str, ReceivedSpan] | None:
        found = {str(s.attributes.get("neutrino.task_id")): s for s in stack.receiver.snapshot()
                 if s.name == "neutrino.submit" and s.attributes.get("neutrino.task_id") in (first.id, retry.id)}
        return found if len(found) == 2 else None

    submits = wait_for(both_submits, timeout_s=30, what="both submit spans")
    original, again = submits[first.id], submits[retry.id]
    assert original.trace_id != again.trace_id
    link = one(spans_of(stack.receiver, again.trace_id, "neutrino.retry"), "neutrino.retry")
    assert again.parent_id == link.span_id
    assert link.links == ((original.trace_id, original.span_id),)
    assert link.attributes["neutrino.retry_of"] == first.id
