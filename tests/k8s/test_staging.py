"""The copy of k8s/ that kustomize builds: objects swapped in place, the namespace and image the kustomize way."""

from __future__ import annotations

import pytest
import yaml

from pools_app.k8s.kubectl import kustomize_build
from pools_app.k8s.staging import image_override, replace_objects, write_top_kustomization


@pytest.mark.parametrize(("image", "entry"), [
    ("reg.io/n:2", {"newName": "reg.io/n", "newTag": "2"}),
    ("registry:5000/team/n", {"newName": "registry:5000/team/n", "newTag": "latest"}),
    ("reg.io/n@sha256:abc", {"newName": "reg.io/n", "digest": "sha256:abc"}),
    ("reg.io/n:3@sha256:abc", {"newName": "reg.io/n", "newTag": "3", "digest": "sha256:abc"}),
])
def test_image_override(image, entry):
    assert image_override("neutrino:0.1.0", image) == {"name": "neutrino:0.1.0", **entry}


def config_map(name: str, **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}}


def test_replaced_objects_take_the_place_of_the_first_and_patches_still_reach_them(tmp_path):
    base, overlay = tmp_path / "base", tmp_path / "overlay"
    base.mkdir()
    overlay.mkdir()
    (base / "kustomization.yaml").write_text("resources: [a.yaml, old.yaml, z.yaml]\n")
    (base / "a.yaml").write_text(yaml.safe_dump(config_map("a")))
    (base / "old.yaml").write_text(yaml.safe_dump_all([config_map("old-1", snap="y"), config_map("old-2", snap="y")]))
    (base / "z.yaml").write_text(yaml.safe_dump(config_map("z")))
    (overlay / "kustomization.yaml").write_text(
        "resources: [../base]\npatches:\n  - path: p.yaml\n    target: {kind: ConfigMap, labelSelector: new=y}\n")
    (overlay / "p.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: any}\ndata: {patched: 'yes'}\n")

    new = [config_map("new-1", new="y"), config_map("new-2", new="y")]
    assert replace_objects(overlay, new, lambda obj: obj["metadata"]["labels"].get("snap") == "y")
    top = write_top_kustomization(tmp_path / "render", overlay, namespace="ml",
                                  images=[image_override("neutrino:0.1.0", "reg.io/n:2")])
    objects = kustomize_build(top)
    assert [o["metadata"]["name"] for o in objects] == ["a", "new-1", "new-2", "z"]  # resource order, not sorted
    assert [o.get("data") for o in objects] == [None, {"patched": "yes"}, {"patched": "yes"}, None]
    assert {o["metadata"]["namespace"] for o in objects} == {"ml"}
    assert not replace_objects(overlay, new, lambda obj: False)
