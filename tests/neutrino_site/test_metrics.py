"""`/metrics`: Prometheus text from this process (sync tasks, request latency) and from the cluster (queued
tasks from the database, queue depth from a real nats-server, heartbeats, the autoscaler's record); and
under gunicorn with several processes, counts that add up whichever process answers, dead ones included."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from pools_app.models import ScalingDecision, Worker
from tasks_app.metrics import forget_cached_queued
from tasks_app.models import Task
from tests.servers import CliEnv, http_server, neutrino
from workers.engine.topology import STREAM, ensure_consumer, ensure_stream, task_subject
from workers.engine.topology import ConsumerSettings as Consumer

pytestmark = pytest.mark.timeout(90)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


def scrape(client: Any, scope: str = "all") -> str:
    response = client.get(f"/metrics?scope={scope}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_sync_tasks_and_request_latency_are_counted_without_login(client, default_pools, ledger_flush):
    for _ in range(3):
        assert client.post("/api/echo", {"args": {"value": 1}}, content_type="application/json").status_code == 200
    assert client.post("/api/sleepy", {"args": {"seconds": 2}}, content_type="application/json").status_code == 504

    text = scrape(client, "process")  # no login: the page is open, like the probes
    assert value(text, "neutrino_tasks_total", function="echo", pool="fast", mode="sync", status="completed") >= 3
    assert value(text, "neutrino_tasks_total", function="sleepy", pool="fast", mode="sync", status="failed") >= 1
    assert value(text, "neutrino_task_duration_seconds_count", function="echo", mode="sync") >= 3
    assert value(text, "neutrino_http_request_duration_seconds_count", method="POST", route="api/<task_name>",
                 status="200") >= 3
    assert value(text, "neutrino_http_request_duration_seconds_count", method="POST", route="api/<task_name>",
                 status="504") >= 1
    assert "neutrino_pool_backlog" not in text  # the cluster's numbers are not in scope=process
    assert client.get("/metrics?scope=everything").status_code == 400
    ledger_flush()  # the rows are written before the test's database is flushed


@pytest.mark.django_db(transaction=True)
def test_queued_tasks_pools_workers_and_replicas_come_from_the_cluster(client, default_pools, live_nats, request):
    now = timezone.now()
    common = dict(pool="gpu", execution_mode="gpu", timeout_ms=1000)
    for duration_ms in (40.0, 400.0, 4000.0):
        Task.objects.create(function_name="pl_infer", status="completed", created_at=now, duration_ms=duration_ms,
                            **common)
    Task.objects.create(function_name="pl_infer", status="failed", created_at=now, **common)
    Task.objects.create(function_name="pl_infer", status="queued", created_at=now - timedelta(seconds=90), **common)
    Worker.objects.create(worker_id="h:1", pool="async", host="h", pid=1, concurrency=2, started_at=now,
                          last_heartbeat=now)
    ScalingDecision.objects.create(pool="gpu", at=now, pending=2, in_flight=1, current=0, desired=1,
                                   reason="scale from zero", actuator="local")

    async def two_waiting() -> None:
        nc = await nats.connect(live_nats.url)
        js = nc.jetstream()
        await ensure_stream(js, ["async", "gpu"])
        await js.purge_stream(STREAM)
        await ensure_consumer(js, "gpu", Consumer())
        for _ in range(2):
            await js.publish(task_subject("gpu", "pl_infer"), b"{}", headers={"Nats-Msg-Id": str(uuid.uuid4())})
        await nc.close()

    async def purge() -> None:
        nc = await nats.connect(live_nats.url)
        await nc.jetstream().purge_stream(STREAM)
        await nc.close()

    asyncio.run(two_waiting())
    # The session's nats-server is shared: leave its stream as empty as this test found it.
    request.addfinalizer(lambda: asyncio.run(purge()))
    forget_cached_queued()
    text = scrape(client, "cluster")
    assert value(text, "neutrino_tasks_total", function="pl_infer", pool="gpu", mode="gpu", status="completed") == 3
    assert value(text, "neutrino_tasks_total", function="pl_infer", pool="gpu", mode="gpu", status="failed") == 1
    assert value(text, "neutrino_task_duration_seconds_bucket", function="pl_infer", mode="gpu", le="0.5") == 2
    assert value(text, "neutrino_task_duration_seconds_bucket", function="pl_infer", mode="gpu", le="+Inf") == 3
    assert value(text, "neutrino_task_duration_seconds_sum", function="pl_infer", mode="gpu") == pytest.approx(4.44)
    assert value(text, "neutrino_pool_depth_known") == 1
    assert value(text, "neutrino_pool_backlog", pool="gpu") == 2
    assert value(text, "neutrino_pool_in_flight", pool="gpu") == 0
    assert value(text, "neutrino_pool_oldest_waiting_seconds", pool="gpu") >= 90
    assert value(text, "neutrino_pool_oldest_waiting_seconds", pool="async") == 0
    assert value(text, "neutrino_pool_workers", pool="async", state="live") == 1
    assert value(text, "neutrino_pool_workers", pool="gpu", state="live") == 0
    assert value(text, "neutrino_pool_replicas_desired", pool="gpu") == 1
    assert value(text, "neutrino_pool_replicas_current", pool="gpu") == 0
    assert ("neutrino_pool_backlog", frozenset({("pool", "fast")})) not in samples(text)  # the http pool has no queue
    assert value(scrape(client), "neutrino_pool_backlog", pool="gpu") == 2  # the default scope has both


def test_counts_add_up_across_gunicorn_processes_and_survive_a_process_that_exits(tmp_path: Path, cli_env: CliEnv):
    prom_dir = tmp_path / "prom"
    env = cli_env(PROMETHEUS_MULTIPROC_DIR=str(prom_dir))
    assert neutrino("manage", "migrate", "-v0", env=env).returncode == 0
    with http_server(env, workers=2) as port:
        base = f"http://127.0.0.1:{port}"

        def calls(n: int) -> None:
            def one(_: int) -> int:
                with httpx.Client(timeout=30) as http:  # a connection each: both processes take some
                    return http.post(f"{base}/api/echo", json={"args": {"value": 1}}).status_code

            with ThreadPoolExecutor(8) as pool:
                assert set(pool.map(one, range(n))) == {200}

        def counted() -> float:
            text = httpx.get(f"{base}/metrics?scope=process", timeout=30).text
            return value(text, "neutrino_tasks_total", function="echo", pool="fast", mode="sync",
                         status="completed") or 0.0

        calls(30)
        assert {counted() for _ in range(6)} == {30.0}  # whichever process answers
        pids = {int(p.stem.rsplit("_", 1)[1]) for p in prom_dir.glob("counter_*.db")}
        assert pids and all(_alive(pid) for pid in pids)  # one file per server process that counted
        gone = sorted(pids)[0]
        os.kill(gone, signal.SIGTERM)  # gunicorn replaces the process; its counts must stay
        deadline = time.monotonic() + 30
        while _alive(gone) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(gone)
        calls(10)
        assert {counted() for _ in range(6)} == {40.0}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as proc:
            return proc.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.django_db
def test_request_labels_come_from_a_closed_set_so_a_client_cannot_add_series(client):
    sent = [str(uuid.uuid4()) for _ in range(5)]
    for n, path in enumerate(sent):
        client.generic(f"BREW{n}", "/healthz")
        client.get(f"/no-such-page/{path}")
    client.generic("PROPFIND", f"/api/{sent[0]}")

    text = scrape(client, "process")
    series = {labels for name, labels in samples(text) if name == "neutrino_http_request_duration_seconds_count"}
    methods = {dict(labels)["method"] for labels in series}
    routes = {dict(labels)["route"] for labels in series}
    assert not any(method.startswith("BREW") or method == "PROPFIND" for method in methods), methods
    assert value(text, "neutrino_http_request_duration_seconds_count", method="other", route="healthz",
                 status="405") >= 5
    counts = {labels: n for (name, labels), n in samples(text).items()
              if name == "neutrino_http_request_duration_seconds_count"}
    unmatched = [n for labels, n in counts.items() if dict(labels)["route"] == "<unmatched>"
                 and dict(labels)["method"] == "GET"]
    assert sum(unmatched) >= 5
    assert not any("no-such-page" in route or any(path in route for path in sent) for route in routes), routes
