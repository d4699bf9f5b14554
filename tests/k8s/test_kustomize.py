"""Neutrino's small `kustomize build`: the subset k8s/ uses, and refusals for the rest."""

from __future__ import annotations

import pytest

from pools_app.k8s.kustomize import KustomizeError, build, split_image, strategic_merge


def test_strategic_merge_rules():
    base = {
        "spec": {"replicas": 2, "paused": False},
        "containers": [{"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}],
        "args": ["serve", "--port", "8000"],
    }
    patch = {
        "spec": {"paused": None, "replicas": 1},
        "containers": [
            {"name": "a", "env": [{"name": "Y", "$patch": "delete"}, {"name": "Z", "value": "3"}]},
            {"name": "b", "image": "i"},
        ],
        "args": ["serve"],
    }
    assert strategic_merge(base, patch) == {
        "spec": {"replicas": 1},
        "containers": [
            {"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Z", "value": "3"}]},
            {"name": "b", "image": "i"},
        ],
        "args": ["serve"],  # lists without names are replaced whole
    }
    assert base["spec"] == {"replicas": 2, "paused": False}  # the input is not modified


def test_split_image():
    assert split_image("neutrino:0.1.0") == ("neutrino", "0.1.0")
    assert split_image("registry:5000/team/neutrino") == ("registry:5000/team/neutrino", "")
    assert split_image("registry:5000/neutrino:1") == ("registry:5000/neutrino", "1")
    assert split_image("neutrino@sha256:abc") == ("neutrino@sha256:abc", "")


def write(path, text):
    path.write_text(text)
    return path


def test_builds_resources_patches_images_and_namespace(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    write(base / "kustomization.yaml", "resources: [app.yaml]\n")
    write(base / "app.yaml", """
apiVersion: apps/v1
kind: Deployment
metadata: {name: app, labels: {tier: web}}
spec:
  replicas: 2
  template:
    spec:
      containers: [{name: app, image: "app:1"}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: gone}
""")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    write(overlay / "kustomization.yaml", """
namespace: prod
resources: [../base]
images: [{name: app, newName: reg/app, newTag: "2"}]
patches:
  - path: one.yaml
  - path: drop.yaml
  - path: by-label.yaml
    target: {kind: Deployment, labelSelector: tier=web}
""")
    write(overlay / "one.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\nspec: {replicas: 5}\n")
    write(overlay / "drop.yaml", "$patch: delete\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: gone}\n")
    write(overlay / "by-label.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: whatever}\n"
                                     "spec: {revisionHistoryLimit: 1}\n")
    [app] = build(overlay)
    assert app["metadata"] == {"name": "app", "labels": {"tier": "web"}, "namespace": "prod"}
    assert app["spec"]["replicas"] == 5 and app["spec"]["revisionHistoryLimit"] == 1
    assert app["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/app:2"


def test_refuses_what_it_does_not_implement(tmp_path):
    write(tmp_path / "kustomization.yaml", "resources: []\nconfigMapGenerator: [{name: x}]\n")
    with pytest.raises(KustomizeError, match="does not support configMapGenerator"):
        build(tmp_path)
    write(tmp_path / "kustomization.yaml", "resources: [missing.yaml]\n")
    with pytest.raises(KustomizeError, match=r"'missing\.yaml' does not exist"):
        build(tmp_path)
    write(tmp_path / "kustomization.yaml", "resources: []\npatches: [{path: p.yaml}]\n")
    write(tmp_path / "p.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: nowhere}\n")
    with pytest.raises(KustomizeError, match="matches no object"):
        build(tmp_path)
