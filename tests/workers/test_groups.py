"""Groups and chains end to end: the HTTP API in this process, a real nats-server, real worker processes.

What must not happen is counted too: a group's callback rows are counted in the database (exactly one),
whatever the order its last members finish in, on however many workers.
"""

from __future__ import annotations

from typing import Any

import pytest

from tasks_app.models import Task, TaskGroup
from tests.servers import wait_for
from tests.workers.test_nats_worker import ensure_topology, wait_status

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]


@pytest.fixture
def pools(default_pools):
    return default_pools


def post(client: Any, path: str, body: dict[str, Any], status: int = 202) -> dict[str, Any]:
    response = client.post(path, body, content_type="application/json")
    assert response.status_code == status, response.content
    return dict(response.json())


def fired_group(client: Any, group_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
    def fired() -> dict[str, Any] | None:
        body = client.get(f"/groups/{group_id}").json()
        return body if body["fired"] else None

    return wait_for(fired, timeout_s=timeout_s, what=f"group {group_id} to fire")


def test_group_of_300_runs_its_callback_once_with_the_results_in_item_order(client, pools, live_nats,
                                                                             start_worker):
    start_worker("async", concurrency=4)
    n = 300
    body = post(client, "/api/gr_square/group", {"items": [{"args": {"x": x}} for x in range(n)],
                                                 "then": "gr_sum", "then_args": {"offset": 7}})
    assert len(body["task_ids"]) == n and body["size"] == n

    group = fired_group(client, body["group_id"])
    callback = wait_status(group["callback_task_id"], "completed", timeout_s=60)

    assert callback.result == sum(x * x for x in range(n)) + 7
    assert callback.args["results"] == [x * x for x in range(n)]  # item order, not finishing order
    assert Task.objects.filter(function_name="gr_sum").count() == 1
    assert group["counts"] == {"completed": n} and group["finished"] == n
    members = Task.objects.filter(group_id=body["group_id"])
    assert members.count() == n and {str(t.id) for t in members} == set(body["task_ids"])
    task = client.get(f"/tasks/{body['task_ids'][0]}").json()
    assert task["group_id"] == body["group_id"] and task["parent_id"] is None


def test_last_members_finishing_at_once_on_two_workers_fire_the_callback_exactly_once(
        client, pools, live_nats, start_worker, tmp_path):
    ensure_topology(live_nats.url)
    workers = [start_worker("async", concurrency=4), start_worker("async", concurrency=4)]
    rounds, size = 3, 8  # each round: 8 members held running on two workers, released together
    for round_no in range(rounds):
        gate, started = tmp_path / f"gate-{round_no}", tmp_path / f"started-{round_no}"
        started.mkdir()
        items = [{"args": {"x": x, "gate": str(gate), "started_dir": str(started)}} for x in range(size)]
        body = post(client, "/api/gr_gated/group", {"items": items, "then": "gr_sum"})
        wait_for(lambda started=started: len(list(started.iterdir())) == size, timeout_s=60,
                 what="every member running")
        running_on = set(Task.objects.filter(group_id=body["group_id"]).values_list("worker_id", flat=True))
        assert running_on == {w.worker_id for w in workers}  # the last ones finish on two workers
        gate.write_text("go")

        group = fired_group(client, body["group_id"])
        callback = wait_status(group["callback_task_id"], "completed")
        assert callback.result == sum(range(size))
    assert Task.objects.filter(function_name="gr_sum").count() == rounds
    assert TaskGroup.objects.filter(fired_at__isnull=True).count() == 0


def test_a_worker_killed_during_the_fan_in_still_fires_it_once(client, pools, live_nats, start_worker, tmp_path):
    ensure_topology(live_nats.url)
    doomed = start_worker("async", concurrency=3)
    survivor = start_worker("async", concurrency=3)
    gate, started = tmp_path / "gate", tmp_path / "started"
    started.mkdir()
    items = [{"args": {"x": x, "gate": str(gate), "started_dir": str(started)}} for x in range(6)]
    body = post(client, "/api/gr_gated/group", {"items": items, "then": "gr_sum"})
    wait_for(lambda: len(list(started.iterdir())) == 6, timeout_s=60, what="every member running")
    gate.write_text("go")
    doomed.kill()  # its members' results are lost or half written; their messages come back after ack_wait

    group = fired_group(client, body["group_id"], timeout_s=90)
    callback = wait_status(group["callback_task_id"], "completed", timeout_s=60)
    assert callback.result == sum(range(6))
    assert Task.objects.filter(function_name="gr_sum").count() == 1
    assert survivor.process.poll() is None


def test_policies_all_and_collect(client, pools, live_nats, start_worker):
    start_worker("async", concurrency=2)
    items = [{"args": {"x": x}} for x in (1, -2, 3, -4)]
    strict = post(client, "/api/gr_fail_if_negative/group", {"items": items, "then": "gr_sum"})
    lenient = post(client, "/api/gr_fail_if_negative/group",
                   {"items": items, "then": "gr_collect", "policy": "collect"})

    strict_cb = wait_status(fired_group(client, strict["group_id"])["callback_task_id"], "failed")
    assert strict_cb.error_type == "GroupFailed" and strict_cb.started_at is None  # never ran
    assert "2 of 4 tasks did not complete (2 failed)" in strict_cb.error
    lenient_cb = wait_status(fired_group(client, lenient["group_id"])["callback_task_id"], "completed")
    assert lenient_cb.result == {"results": [1, None, 3, None], "failed_indexes": [1, 3], "statuses": ["failed"]}


def test_chain_of_three_passes_each_result_on(client, pools, live_nats, start_worker):
    start_worker("async", concurrency=2)
    body = post(client, "/chains", {"steps": [{"function": "gr_square", "args": {"x": 3}},
                                              {"function": "gr_add_one"}, {"function": "gr_double"}]})

    def result_task() -> str | None:
        chain = client.get(f"/groups/{body['chain_id']}").json()["chain"]
        return chain["result_task_id"]

    last = wait_status(wait_for(result_task, timeout_s=60, what="the chain's last step"), "completed")
    assert last.result == (3 * 3 + 1) * 2
    steps = {t.function_name: t for t in Task.objects.filter(function_name__in=["gr_square", "gr_add_one",
                                                                                "gr_double"])}
    assert len(steps) == 3 and steps["gr_add_one"].args == {"result": 9} and steps["gr_double"].args == {"result": 10}
    assert steps["gr_add_one"].completed_at <= steps["gr_double"].started_at  # one after another


def test_a_failed_step_ends_the_rest_of_the_chain_unrun(client, pools, live_nats, start_worker):
    start_worker("async", concurrency=2)
    body = post(client, "/chains", {"steps": [{"function": "gr_fail_if_negative", "args": {"x": -1}},
                                              {"function": "gr_add_one"}, {"function": "gr_double"}]})
    chain = wait_for(lambda: client.get(f"/groups/{body['chain_id']}").json()["chain"]["result_task_id"],
                     timeout_s=60, what="the chain's end")
    last = Task.objects.get(id=chain)
    assert last.function_name == "gr_double" and last.status == "failed" and last.started_at is None
    assert Task.objects.get(function_name="gr_add_one").status == "failed"


def test_cancel_a_group_cancels_its_unfinished_members_and_its_callback(client, pools, live_nats, start_worker,
                                                                        tmp_path):
    start_worker("async", concurrency=2)
    gate, started = tmp_path / "never", tmp_path / "started"
    started.mkdir()
    items = [{"args": {"x": x, "gate": str(gate), "started_dir": str(started)}} for x in range(5)]
    body = post(client, "/api/gr_gated/group", {"items": items, "then": "gr_sum"})
    wait_for(lambda: len(list(started.iterdir())) == 2, timeout_s=60, what="two members running")

    response = client.delete(f"/groups/{body['group_id']}")
    assert response.status_code == 200, response.content
    assert response.json()["cancelled"] == 5

    group = fired_group(client, body["group_id"])
    assert group["counts"] == {"cancelled": 5}
    callback = Task.objects.get(id=group["callback_task_id"])
    assert callback.status == "cancelled" and callback.started_at is None
    assert Task.objects.filter(function_name="gr_sum").count() == 1


def test_a_task_submits_a_group_and_a_child_linked_to_it(live_server, pools, live_nats, start_worker):
    from neutrino import NeutrinoClient

    start_worker("async", concurrency=3, env={"NEUTRINO_URL": live_server.url})
    with NeutrinoClient(live_server.url) as api:
        parent = api.submit("gr_fan_out", {"n": 20})
        group_id = parent.wait(timeout=60)
        assert api.wait_group(group_id, timeout=60) == sum(x * x for x in range(20))
        group = api.get_group(group_id)
    assert group.parent_id == parent.id and group.counts == {"completed": 20}
    children = Task.objects.filter(parent_id=parent.id)
    # The 20 members, the lone square it submitted and the group's callback.
    assert children.count() == 22
    assert sorted(set(children.values_list("function_name", flat=True))) == ["gr_square", "gr_sum"]


def test_cancelling_a_parent_cancels_its_unfinished_children_and_its_groups(client, pools, live_nats):
    ensure_topology(live_nats.url)  # no worker: everything stays queued
    parent = post(client, "/api/gr_square", {"args": {"x": 1}})["task_id"]
    child = post(client, "/api/gr_square", {"args": {"x": 2}, "parent_id": parent})["task_id"]
    group = post(client, "/api/gr_square/group", {"items": [{"args": {"x": x}} for x in range(3)],
                                                  "then": "gr_sum", "parent_id": parent})
    assert client.get(f"/tasks/{child}").json()["parent_id"] == parent

    assert client.delete(f"/tasks/{parent}").status_code == 200

    assert Task.objects.get(id=child).status == "cancelled"
    assert set(Task.objects.filter(group_id=group["group_id"]).values_list("status", flat=True)) == {"cancelled"}
    got = client.get(f"/groups/{group['group_id']}")
    assert got.status_code == 200, got.content[-3000:]
    fired = got.json()
    assert fired["fired"] and fired["cancel_requested"]
    assert Task.objects.get(id=fired["callback_task_id"]).status == "cancelled"
    assert Task.objects.filter(function_name="gr_sum").count() == 1
    sync_child = client.post("/api/add", {"args": {"a": 1, "b": 2}, "parent_id": parent},
                             content_type="application/json")
    assert sync_child.status_code == 200, sync_child.content
    wait_for(lambda: Task.objects.filter(id=sync_child.json()["task_id"], parent_id=parent).exists(),
             what="the sync child's row, linked (the ledger writes it a batch later)")
    unknown = post(client, "/api/gr_square", {"args": {"x": 1}, "parent_id": "6d1c0bd1-0000-0000-0000-000000000000"},
                   422)
    assert unknown["fields"][0]["field"] == "parent_id"


def test_bad_groups_are_refused_with_the_field(client, pools, live_nats):
    ensure_topology(live_nats.url)
    no_results = post(client, "/api/gr_square/group", {"items": [{"args": {"x": 1}}], "then": "gr_add_one"}, 422)
    assert "results" in no_results["message"]
    bad_item = post(client, "/api/gr_square/group", {"items": [{"args": {"x": 1}}, {"args": {"y": 2}}]}, 422)
    assert "item 1" in bad_item["message"]
    chain_without_result = post(client, "/chains", {"steps": [{"function": "gr_square", "args": {"x": 1}},
                                                              {"function": "gr_square"}]}, 422)
    assert "result" in chain_without_result["message"]
    assert Task.objects.count() == 0 and TaskGroup.objects.count() == 0
    assert client.get("/groups/not-a-uuid").status_code == 404


def test_the_scheduler_fires_a_group_whose_last_member_ended_by_a_path_without_the_hook(
        client, pools, live_nats, start_scheduler):
    ensure_topology(live_nats.url)  # no worker: the members stay queued until the test ends them
    body = post(client, "/api/gr_square/group", {"items": [{"args": {"x": x}} for x in range(4)],
                                                 "then": "gr_sum"})
    # As the Django admin would: a plain UPDATE, no fan-in.
    for index, task_id in enumerate(body["task_ids"]):
        Task.objects.filter(id=task_id).update(status="completed", result=index * index)
    assert not TaskGroup.objects.get(id=body["group_id"]).fired_at
    start_scheduler()

    group = fired_group(client, body["group_id"])
    callback = Task.objects.get(id=group["callback_task_id"])
    assert callback.args == {"results": [0, 1, 4, 9]} and callback.status in ("pending", "queued")
    assert Task.objects.filter(function_name="gr_sum").count() == 1


def test_the_client_runs_a_chain_and_cancels_a_group(live_server, pools, live_nats, start_worker, tmp_path):
    from neutrino import NeutrinoClient

    start_worker("async", concurrency=2)
    with NeutrinoClient(live_server.url) as api:
        chain = api.chain([("gr_square", {"x": 4}), "gr_add_one", "gr_double"])
        assert api.wait_group(chain.id, timeout=60) == (16 + 1) * 2
        assert api.get_group(chain.id).result_task_id is not None

        started = tmp_path / "started"
        started.mkdir()
        items = [{"x": x, "gate": str(tmp_path / "never"), "started_dir": str(started)} for x in range(3)]
        group = api.group("gr_gated", items, then="gr_sum")
        assert len(group.task_ids) == 3
        cancelled = api.cancel_group(group.id)
        assert cancelled.fired and cancelled.counts == {"cancelled": 3}
        with pytest.raises(neutrino_errors().TaskCancelled):
            api.wait_group(group.id, timeout=30)


def test_the_asyncio_client_runs_a_group(live_server, pools, live_nats, start_worker):
    import asyncio

    from neutrino import AsyncNeutrinoClient

    start_worker("async", concurrency=2)

    async def main() -> Any:
        async with AsyncNeutrinoClient(live_server.url) as api:
            group = await api.group("gr_square", [{"x": x} for x in range(10)], then="gr_sum")
            return await api.wait_group(group.id, timeout=60)

    assert asyncio.run(main()) == sum(x * x for x in range(10))


def neutrino_errors() -> Any:
    from neutrino.client import errors

    return errors


def test_cancelling_a_chain_ends_its_current_and_later_steps_cancelled(client, pools, live_nats):
    ensure_topology(live_nats.url)  # no worker: the first step stays queued
    body = post(client, "/chains", {"steps": [{"function": "gr_square", "args": {"x": 2}},
                                              {"function": "gr_add_one"}, {"function": "gr_double"}]})
    response = client.delete(f"/groups/{body['chain_id']}")
    assert response.status_code == 200, response.content

    chain = client.get(f"/groups/{body['chain_id']}").json()["chain"]
    assert chain["steps"] == 3 and chain["result_task_id"] is not None
    statuses = dict(Task.objects.values_list("function_name", "status"))
    assert statuses == {"gr_square": "cancelled", "gr_add_one": "cancelled", "gr_double": "cancelled"}
    assert not Task.objects.exclude(started_at=None).exists()  # nothing ran
