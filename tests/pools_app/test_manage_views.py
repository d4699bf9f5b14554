"""Pool management in the dashboard (staff only) and the Django admin, and each pool's live view.

Real database, real nats-server: a change must reach JetStream (stream subjects, the pool's consumer)
and the gateway's submits without a restart."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import nats
import pytest
from django.utils import timezone

from pools_app.models import Pool, ScalingDecision, Worker
from tasks_app.models import Task
from workers.engine.topology import STREAM, consumer_name

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

VALID = {
    "name": "a100", "kind": "gpu", "mode": "nats", "enabled": "on", "concurrency": "1", "min_replicas": "0",
    "max_replicas": "2", "target_backlog_per_replica": "4", "scale_down_delay_s": "60", "max_backlog": "0",
    "image": "", "cpu_request": "2", "cpu_limit": "4", "memory_request": "8Gi", "memory_limit": "16Gi",
    "gpu_count": "1", "gpu_resource": "nvidia.com/gpu", "node_selector": '{"gpu": "a100"}',
    "tolerations": '[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]',
}


@pytest.fixture
def staff(client, django_user_model):
    user = django_user_model.objects.create_user("boss", password="x" * 12, is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


@pytest.fixture
def viewer(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("viewer", password="x" * 12))
    return client


def jetstream(url: str) -> tuple[list[str], set[str]]:
    async def read() -> tuple[list[str], set[str]]:
        nc = await nats.connect(url)
        js = nc.jetstream()
        info = await js.stream_info(STREAM)
        consumers = {c.name for c in await js.consumers_info(STREAM)}
        await nc.close()
        return sorted(info.config.subjects or []), consumers

    return asyncio.run(read())


def call(client: Any, task: str) -> Any:
    return client.post(f"/api/{task}", {"args": {"n": 7}}, content_type="application/json")


def test_a_task_of_a_missing_pool_answers_503_until_an_admin_creates_it(staff, default_pools, live_nats):
    response = call(staff, "pl_a100")
    assert response.status_code == 503
    assert "pool a100 does not exist" in response.json()["message"]

    created = staff.post("/ui/pools/new", VALID)
    assert created.status_code == 302 and created["Location"] == "/ui/pools/a100"
    pool = Pool.objects.get(name="a100")
    assert (pool.kind, pool.gpu_count, pool.node_selector) == ("gpu", 1, {"gpu": "a100"})

    subjects, consumers = jetstream(live_nats.url)  # the stream and the consumer followed, no restart
    assert "neutrino.a100.*" in subjects and consumer_name("a100") in consumers
    accepted = call(staff, "pl_a100")
    assert accepted.status_code == 202, accepted.content
    assert Task.objects.get(id=accepted.json()["task_id"]).pool == "a100"


def test_bad_values_are_reported_next_to_their_fields(staff, default_pools):
    bad = {**VALID, "name": "a-100", "min_replicas": "5", "max_replicas": "2", "cpu_request": "lots",
           "memory_request": "32Gi", "memory_limit": "16Gi", "tolerations": "[{oops", "gpu_count": "0"}
    response = staff.post("/ui/pools/new", bad)
    assert response.status_code == 200
    form = response.context["form"]
    assert "letters, digits and underscores" in form.errors["name"][0]
    assert form.errors["min_replicas"] == ["Must not exceed max replicas (2)."]
    assert "'lots' is not a Kubernetes quantity" in form.errors["cpu_request"][0]
    assert form.errors["memory_request"] == ["Must not exceed the memory limit (16Gi)."]
    assert "JSON" in form.errors["tolerations"][0]
    assert form.errors["gpu_count"] == ["A gpu pool asks Kubernetes for at least 1 GPU per worker."]
    html = response.content.decode()
    assert 'id="id_min_replicas_error"' in html and "Must not exceed max replicas (2)." in html
    assert not Pool.objects.filter(name__in=["a-100", "a100"]).exists()
    reserved = staff.post("/ui/pools/new", {**VALID, "name": "events"}).context["form"]
    assert "reserved" in reserved.errors["name"][0]


def test_edit_keeps_the_name_and_takes_effect(staff, default_pools):
    page = staff.get("/ui/pools/async/edit")
    assert page.status_code == 200 and page.context["form"].fields["name"].disabled
    response = staff.post("/ui/pools/async/edit", {**VALID, "name": "renamed", "kind": "cpu", "gpu_count": "0",
                                                   "max_replicas": "8", "concurrency": "3"})
    assert response.status_code == 302, response.context["form"].errors if response.context else ""
    pool = Pool.objects.get(name="async")  # not renamed
    assert (pool.max_replicas, pool.concurrency) == (8, 3)


def test_disable_enable_and_drain_answer_submits_accordingly(staff, default_pools, live_nats):
    assert staff.post("/ui/pools/async/disable").status_code == 302
    refused = staff.post("/api/wk_add", {"args": {"a": 1, "b": 2}}, content_type="application/json")
    assert refused.status_code == 503 and "pool async is disabled" in refused.json()["message"]
    staff.post("/ui/pools/async/enable")
    staff.post("/ui/pools/async/drain")
    draining = staff.post("/api/wk_add", {"args": {"a": 1, "b": 2}}, content_type="application/json")
    assert draining.status_code == 503 and "pool async is draining" in draining.json()["message"]
    staff.post("/ui/pools/async/undrain")
    assert Pool.objects.get(name="async").enabled and not Pool.objects.get(name="async").draining
    assert staff.post("/ui/pools/fast/disable", follow=True).status_code == 200
    assert Pool.objects.get(name="fast").enabled  # refused: the sync tasks run there


def test_deleting_a_pool_with_queued_tasks_is_refused_with_the_count(staff, default_pools, live_nats):
    staff.post("/ui/pools/new", VALID)
    for status in ("queued", "queued", "running"):
        Task.objects.create(function_name="pl_a100", status=status, pool="a100", execution_mode="gpu",
                            created_at=timezone.now(), timeout_ms=1000)
    refused = staff.post("/ui/pools/a100/delete", follow=True)
    assert "has 3 task(s) pending, queued or running; drain it first" in refused.content.decode()
    assert Pool.objects.filter(name="a100").exists()

    Task.objects.filter(pool="a100").update(status="completed")  # drained
    deleted = staff.post("/ui/pools/a100/delete")
    assert deleted.status_code == 302 and deleted["Location"] == "/ui/pools"
    assert not Pool.objects.filter(name="a100").exists()
    subjects, consumers = jetstream(live_nats.url)
    assert "neutrino.a100.*" not in subjects and consumer_name("a100") not in consumers
    assert call(staff, "pl_a100").status_code == 503


def test_only_staff_manage_pools(viewer, default_pools):
    assert viewer.get("/ui/pools/new").status_code == 403
    assert viewer.post("/ui/pools/new", VALID).status_code == 403
    assert viewer.get("/ui/pools/async/edit").status_code == 403
    assert viewer.post("/ui/pools/async/disable").status_code == 403
    assert viewer.post("/ui/pools/async/delete").status_code == 403
    page = viewer.get("/ui/pools/async")  # the live view is for every signed-in user
    assert page.status_code == 200 and "/ui/pools/async/edit" not in page.content.decode()
    assert Pool.objects.get(name="async").enabled


def test_the_live_view_shows_queue_workers_replicas_and_the_hour(staff, default_pools, live_nats):
    now = timezone.now()
    Worker.objects.create(worker_id="host:42", pool="gpu", host="host", pid=42, concurrency=1, running=1,
                          gpus=[{"name": "Stand-in GPU", "memory": "1024 MiB"}], started_at=now, last_heartbeat=now)
    for seconds, pending, desired in ((3000, 0, 0), (1800, 6, 2), (1785, 4, 2), (300, 0, 0)):
        ScalingDecision.objects.create(pool="gpu", at=now - timedelta(seconds=seconds), pending=pending,
                                       in_flight=1, current=desired, desired=desired, reason="test")
    Task.objects.create(function_name="pl_infer", status="queued", pool="gpu", execution_mode="gpu",
                        created_at=now - timedelta(seconds=42), timeout_ms=1000)
    page = staff.get("/ui/pools/gpu")
    html = page.content.decode()
    assert page.status_code == 200
    live = page.context["live"]
    assert (live.pending, live.in_flight) == (0, 0)  # JetStream answered (nothing published here)
    assert live.oldest_waiting_s >= 42 and live.live_workers == 1 and live.latest.desired == 0
    assert "Stand-in GPU" in html and 'class="replicas-desired"' in html and "Backlog and replicas" in html
    chart = page.context["chart"]
    assert chart.points == 4 and chart.backlog.count("M") == 3  # three runs of 30 s slots, gaps between
    partial = staff.get("/ui/pools/gpu", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="pool-live")
    assert b'id="pool-live"' in partial.content and b"<html" not in partial.content
    assert staff.get("/ui/pools/nope").status_code == 404


def test_the_django_admin_validates_and_refuses_to_delete_a_busy_pool(staff, default_pools):
    response = staff.post("/admin/pools_app/pool/add/", {**VALID, "min_replicas": "3", "max_replicas": "1"})
    assert response.status_code == 200
    assert "Must not exceed max replicas (1)." in response.content.decode()
    assert staff.post("/admin/pools_app/pool/add/", VALID).status_code == 302
    pool = Pool.objects.get(name="a100")
    Task.objects.create(function_name="pl_a100", status="queued", pool="a100", execution_mode="gpu",
                        created_at=timezone.now(), timeout_ms=1000)
    confirm = staff.get(f"/admin/pools_app/pool/{pool.pk}/delete/")
    assert "1 task(s) pending, queued or running; drain it first" in confirm.content.decode()
    staff.post(f"/admin/pools_app/pool/{pool.pk}/delete/", {"post": "yes"})
    assert Pool.objects.filter(name="a100").exists()
