"""`neutrino up` against the fake Kubernetes API server (tests/fakes/k8s_api.py): no cluster runs here.

What the fake cannot show: scheduling, image pulls, admission webhooks and the real API server's
validation (the manifests are validated against the schema in test_manifests.py instead).
"""

from __future__ import annotations

import io

import pytest
import yaml

from neutrino_site.cli import main
from pools_app.k8s.apply import Progress, rollout_state
from pools_app.k8s.up import RenderOptions, up_command
from tests.fakes.k8s_api import FakeKubeAPI
from workers.engine.nats_server import free_port

pytestmark = pytest.mark.django_db


def run_up(fake_url: str, *, overlay: str = "base", namespace: str | None = None, dry_run: bool = False,
           timeout_s: float = 10.0) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = up_command(RenderOptions(overlay=overlay, namespace=namespace), context=None, kube_url=fake_url,
                      dry_run=dry_run, timeout_s=timeout_s, out=out, err=err, poll_s=0.02, live=False)
    return code, out.getvalue(), err.getvalue()


def applied_bodies(fake: FakeKubeAPI) -> list[dict]:
    return [r.body for r in fake.writes() if r.content_type == "application/apply-patch+yaml"]


@pytest.mark.parametrize("overlay", ["base", "single-node"])
def test_dry_run_prints_exactly_what_a_real_run_applies(extra_pools, fake_kube, overlay):
    code, printed, _ = run_up(fake_kube.url, overlay=overlay, dry_run=True)
    assert code == 0
    assert fake_kube.requests == []  # --dry-run touches nothing
    dry = list(yaml.safe_load_all(printed))

    code, _, err = run_up(fake_kube.url, overlay=overlay)
    assert code == 0, err
    assert applied_bodies(fake_kube) == dry  # same objects, same order
    for request in fake_kube.writes():
        assert request.query["fieldManager"] == ["neutrino"]
        # Applied with force; the one create is the NATS Secret (nats_secret.py), which is never applied.
        assert request.query.get("force") == ["true"] or (request.method, request.path) == (
            "POST", "/api/v1/namespaces/neutrino/secrets")


def test_a_real_run_applies_everything_and_waits_for_the_rollouts(extra_pools, fake_kube):
    fake_kube.rollout_polls = 3  # each workload reports "not ready" for its first reads
    code, out, err = run_up(fake_kube.url)
    assert code == 0, err
    stored = {(o["kind"], o["metadata"]["name"]) for o in fake_kube.objects(namespace="neutrino")}
    for expected in [("StatefulSet", "nats"), ("Deployment", "neutrino-gateway"), ("Deployment", "neutrino-fast"),
                     ("Deployment", "neutrino-pool-train"), ("Deployment", "neutrino-pool-big-mem"),
                     ("HorizontalPodAutoscaler", "neutrino-fast-hpa"), ("Role", "neutrino-autoscaler")]:
        assert expected in stored
    assert "applied  Deployment neutrino/neutrino-pool-train" in out
    # The progress display: a "...." line per workload while it rolls out, then its "done" line.
    gateway = [line for line in out.splitlines() if "Deployment neutrino/neutrino-gateway " in line]
    assert any("...." in line for line in gateway) and "done" in gateway[-1] and "2/2 available" in gateway[-1]
    assert any("Job neutrino/neutrino-migrate-" in line and "complete" in line for line in out.splitlines())
    assert out.rstrip().endswith("all rolled out")

    # Again: nothing changes, nothing is created twice.
    before = len(fake_kube.objects())
    code, _, _ = run_up(fake_kube.url)
    assert code == 0 and len(fake_kube.objects()) == before


def test_an_error_from_the_cluster_names_the_object_status_and_message(extra_pools, fake_kube):
    fake_kube.fail("Deployment", "neutrino-pool-train", code=422,
                   message='Deployment.apps "neutrino-pool-train" is invalid: spec.template.spec.containers[0]'
                           '.resources.limits[nvidia.com/gpu]: Invalid value: "2": must be equal to requests')
    code, out, err = run_up(fake_kube.url)
    assert code == 1
    assert "neutrino up: 1 of" in err
    assert "Deployment neutrino/neutrino-pool-train: 422 Invalid: Deployment.apps" in err
    assert "must be equal to requests" in err and "hint:" in err
    assert "failed   Deployment neutrino/neutrino-pool-train" in out
    assert fake_kube.get("Deployment", "neutrino", "neutrino-gateway") is not None  # the rest was applied
    assert "waiting for rollouts" not in out


def test_a_missing_namespace_is_reported_once_with_what_to_do(default_pools, fake_kube):
    code, _, err = run_up(fake_kube.url, namespace="tasks")
    assert code == 1
    assert 'namespaces "tasks" not found' in err and "kubectl create namespace" in err
    assert len(fake_kube.writes()) == 1  # it stopped at the first refusal


def test_an_unreachable_cluster_is_reported_plainly(default_pools):
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = run_up(url)
    assert code == 1
    assert f"cannot reach the Kubernetes API at {url}" in err


def test_rollouts_that_never_finish_time_out_with_the_names(default_pools):
    with FakeKubeAPI(complete_rollouts=False) as fake:
        code, out, _ = run_up(fake.url, timeout_s=0.2)
    assert code == 1
    assert "timed out after 0 s waiting for: StatefulSet neutrino/nats" in out


def test_the_cli_command_with_the_hidden_kube_url_flag(default_pools, fake_kube, capsys):
    assert main(["up", "--kube-url", fake_kube.url, "--overlay", "production", "--timeout", "10"]) == 0
    assert "all rolled out" in capsys.readouterr().out
    assert fake_kube.get("StatefulSet", "neutrino", "nats")["spec"]["template"]["spec"]["affinity"]
    assert main(["up", "--dry-run", "--overlay", "production"]) == 0
    assert len(list(yaml.safe_load_all(capsys.readouterr().out))) == len(applied_bodies(fake_kube))


def test_rollout_states():
    deployment = {"kind": "Deployment", "metadata": {"generation": 2}, "spec": {"replicas": 3}}
    assert rollout_state(None).text == "not found"
    assert not rollout_state({**deployment, "status": {"observedGeneration": 1}}).done
    rolling = {"observedGeneration": 2, "replicas": 4, "updatedReplicas": 2, "availableReplicas": 3}
    assert rollout_state({**deployment, "status": rolling}).text == "3/3 available, 2 updated"
    assert not rollout_state({**deployment, "status": rolling}).done
    finished = {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}
    assert rollout_state({**deployment, "status": finished}).done
    failed_job = {"kind": "Job", "spec": {}, "status": {"conditions": [
        {"type": "Failed", "status": "True", "message": "Job has reached the specified backoff limit"}]}}
    assert rollout_state(failed_job).failed and "backoff limit" in rollout_state(failed_job).text


def test_progress_redraws_in_place_on_a_terminal():
    out = io.StringIO()
    progress = Progress(out, live=True)
    progress.show({"Deployment a": "....  0/1", "Deployment bb": "....  0/2"})
    progress.show({"Deployment a": "done  1/1", "Deployment bb": "....  1/2"})
    text = out.getvalue()
    assert text.count("\x1b[2F") == 1  # moved up over the two lines once, then redrew them
    assert text.endswith("\x1b[2K  Deployment bb  ....  1/2\n")


def test_a_database_not_migrated_yet_renders_the_default_pools_and_says_so():
    from django.db import connection

    from pools_app.models import Pool

    with connection.cursor() as cursor:  # a first deploy: the migration Job has not run (rolled back after)
        cursor.execute(f"DROP TABLE {Pool._meta.db_table}")
    code, printed, err = run_up("http://unused", dry_run=True)
    assert code == 0
    assert "note: cannot read the pools from the database" in err and "default pools (async, gpu)" in err
    pools = sorted(o["metadata"]["name"] for o in yaml.safe_load_all(printed) if o["kind"] == "Deployment")
    assert "neutrino-pool-async" in pools and "neutrino-pool-gpu" in pools
