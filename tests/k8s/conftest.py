"""Fixtures of the Kubernetes tests: pools to render, and the fake API server (tests/fakes/k8s_api.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.k8s_api import FakeKubeAPI


@pytest.fixture
def fake_kube() -> Iterator[FakeKubeAPI]:
    """A fake Kubernetes API server on a free port, namespaces `default` and `neutrino`; rollouts complete at once."""
    with FakeKubeAPI() as fake:
        yield fake


def gpu_pool(**overrides):
    from pools_app.models import Pool

    fields = dict(
        name="train", kind="gpu", mode="nats", concurrency=1, min_replicas=0, max_replicas=3, gpu_count=2,
        gpu_resource="nvidia.com/gpu", cpu_request="4", cpu_limit="8", memory_request="24Gi", memory_limit="32Gi",
        node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        image="registry.example.com/neutrino-cuda:12.4",
    )
    return Pool(**{**fields, **overrides})


def memory_pool(**overrides):
    from pools_app.models import Pool

    fields = dict(
        name="big_mem", kind="memory", mode="nats", concurrency=2, min_replicas=1, max_replicas=6,
        cpu_request="1", cpu_limit="", memory_request="16Gi", memory_limit="32Gi",
    )
    return Pool(**{**fields, **overrides})


@pytest.fixture
def extra_pools(db, default_pools):
    """The default pools plus a GPU pool and a memory pool, in the database."""
    gpu = gpu_pool()
    gpu.save()
    memory = memory_pool()
    memory.save()
    return {"train": gpu, "big_mem": memory, **default_pools}
