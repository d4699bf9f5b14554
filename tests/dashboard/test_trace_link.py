"""The task page links to the task's trace when NEUTRINO_TRACE_URL_TEMPLATE is set (workers.engine.tracing)."""

from __future__ import annotations

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_the_task_page_links_to_the_trace_of_its_submit(staff_client, make_task, settings) -> None:
    settings.NEUTRINO_TRACE_URL_TEMPLATE = "https://jaeger.example/trace/{trace_id}?uiFind=x"
    task = make_task(function_name="traced", status="completed", traceparent=TRACEPARENT)
    html = staff_client.get(f"/ui/tasks/{task.id}").content.decode()
    assert 'id="task-trace" href="https://jaeger.example/trace/4bf92f3577b34da6a3ce929d0e0e4736?uiFind=x"' in html


def test_no_link_without_a_template_or_without_a_trace(staff_client, make_task, settings) -> None:
    settings.NEUTRINO_TRACE_URL_TEMPLATE = ""
    traced = make_task(function_name="traced", status="completed", traceparent=TRACEPARENT)
    assert 'id="task-trace"' not in staff_client.get(f"/ui/tasks/{traced.id}").content.decode()
    settings.NEUTRINO_TRACE_URL_TEMPLATE = "https://jaeger.example/trace/{trace_id}"
    untraced = make_task(function_name="untraced", status="completed")
    assert 'id="task-trace"' not in staff_client.get(f"/ui/tasks/{untraced.id}").content.decode()
