"""Unique tasks (`unique_for_s`): two live HTTP servers on one database, a real nats-server.

A duplicate within the window is answered with the first task (200, `"deduplicated": true`); the database's
unique index decides between the servers, so submits racing on both make one task. The counts are read
back through the API and from the stream (one message, not two).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

import pytest
from django.utils import timezone

from tasks_app.models import Task
from tests.servers import http_server, neutrino, request, wait_for
from tests.workers.test_lost_messages import purge_stream
from tests.workers.test_nats_worker import ensure_topology, nats_call
from workers.engine.topology import STREAM

RACERS = 16


def stream_messages(url: str) -> int:
    async def count(nc: Any, js: Any) -> int:
        return int((await js.stream_info(STREAM)).state.messages)
    return nats_call(url, count)


@pytest.mark.timeout(180)
def test_racing_duplicates_on_two_servers_make_one_task(cli_env, nats_server) -> None:
    env = cli_env(NEUTRINO_TASK_MODULES="tests.fixtures.worker_tasks", NEUTRINO_NATS_URL=nats_server.url)
    assert neutrino("manage", "migrate", "-v0", env=env).returncode == 0
    ensure_topology(nats_server.url)
    purge_stream(nats_server.url)
    try:
        with http_server(env) as first, http_server(env) as second:
            barrier = threading.Barrier(RACERS)
            answers: list[tuple[int, dict[str, Any]]] = []

            def submit(index: int) -> None:
                barrier.wait(timeout=30)
                # Same report, different caller note: `unique_on=["report"]` makes them one.
                status, body = request(first if index % 2 else second, "POST", "/api/wk_unique_report",
                                       {"args": {"report": "q4", "requested_by": f"user-{index}"}})
                answers.append((status, json.loads(body)))

            threads = [threading.Thread(target=submit, args=(index,)) for index in range(RACERS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)

            assert Counter(status for status, _ in answers) == {202: 1, 200: RACERS - 1}, answers
            (made,) = [body["task_id"] for status, body in answers if status == 202]
            assert all(body["task_id"] == made and body["deduplicated"] is True
                       for status, body in answers if status == 200)
            status, page = request(first, "GET", "/tasks?function=wk_unique_report")
            assert status == 200 and [item["task_id"] for item in json.loads(page)["items"]] == [made]
            assert stream_messages(nats_server.url) == 1

            # Another report is another task; a submit's own window replaces the task's.
            status, body = request(second, "POST", "/api/wk_unique_report", {"args": {"report": "q3"}})
            assert status == 202 and body and json.loads(body)["task_id"] != made
            status, body = request(first, "POST", "/api/wk_add", {"args": {"a": 1, "b": 2}, "unique_for_s": 60})
            again_status, again = request(second, "POST", "/api/wk_add", {"args": {"a": 1, "b": 2},
                                                                           "unique_for_s": 60})
            assert (status, again_status) == (202, 200)
            assert json.loads(again)["task_id"] == json.loads(body)["task_id"]
            # Without unique_for_s, wk_add is not unique: the same call makes a new task.
            status, body = request(first, "POST", "/api/wk_add", {"args": {"a": 1, "b": 2}})
            assert status == 202
    finally:
        purge_stream(nats_server.url)


@pytest.mark.django_db(transaction=True)
def test_a_duplicate_after_the_window_makes_a_new_task(client, live_nats, default_pools) -> None:
    ensure_topology(live_nats.url)
    purge_stream(live_nats.url)

    def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        response = client.post("/api/wk_add", json.dumps(body), content_type="application/json")
        return response.status_code, response.json()

    try:
        status, first = post({"args": {"a": 5, "b": 6}, "unique_for_s": 0.5})
        assert status == 202
        status, same = post({"args": {"a": 5, "b": 6}, "unique_for_s": 0.5})
        assert (status, same["task_id"], same["deduplicated"]) == (200, first["task_id"], True)
        until = Task.objects.get(id=first["task_id"]).unique_until
        assert until is not None
        wait_for(lambda: timezone.now() > until, timeout_s=10, what="the unique window to end")
        status, later = post({"args": {"a": 5, "b": 6}, "unique_for_s": 0.5})
        assert status == 202 and later["task_id"] != first["task_id"]
        # The first task keeps its row; its key moved to the new one.
        assert Task.objects.filter(function_name="wk_add", args={"a": 5, "b": 6}).count() == 2
        assert Task.objects.get(id=first["task_id"]).unique_key is None

        status, bad = post({"args": {"a": 1, "b": 1}, "unique_for_s": -1})
        assert status == 422 and [f["field"] for f in bad["fields"]] == ["unique_for_s"]
        sync = client.post("/api/echo", json.dumps({"args": {"value": 1}, "unique_for_s": 5, "priority": "high"}),
                           content_type="application/json")
        assert sync.status_code == 422 and {f["field"] for f in sync.json()["fields"]} <= {"priority", "unique_for_s"}
        batch = client.post("/api/wk_unique_report/batch", json.dumps({"items": [{"args": {"report": "x"}}]}),
                            content_type="application/json")
        assert batch.status_code == 422 and "one by one" in batch.json()["message"]
    finally:
        purge_stream(live_nats.url)
