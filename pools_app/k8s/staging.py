"""The temporary copy of `k8s/` that `neutrino k8s render` and `neutrino up` hand to kustomize.

kustomize builds files, so what Neutrino changes is written into a copy of the manifests, never into
`k8s/` itself: the database's pool Deployments in place of the snapshots in the base (before the
overlay's patches apply, so they reach the new pools too), and a top kustomization over the overlay
that sets the namespace and the image the kustomize way (a NamespaceTransformer, an `images:` entry).
The top kustomization keeps kustomize's output in resource order (`sortOptions: fifo`), as the files list it.

Imports no Django.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from pools_app.k8s.kubectl import Obj

KUSTOMIZATION = "kustomization.yaml"


def copy_manifests(k8s_dir: Path, into: Path) -> Path:
    """A copy of `k8s_dir` under `into`; overlays refer to the base by relative path, so the tree is copied whole."""
    return Path(shutil.copytree(k8s_dir, into / k8s_dir.name))


def replace_objects(directory: Path, objects: Sequence[Obj], is_replaced: Callable[[Obj], bool]) -> bool:
    """Drop every object `is_replaced` picks from the resource files of the kustomization in `directory`.

    `objects` go into the first file (in resource order) that held one, where kustomize then finds them.
    Rewrites the files in place (comments are lost: call it on a copy). False when nothing was picked.
    """
    placed = False
    for path in _resource_files(directory):
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        kept = [doc for doc in documents if not is_replaced(doc)]
        if len(kept) == len(documents):
            continue
        if not placed:
            kept.extend(objects)
            placed = True
        # An empty resource file is fine for kustomize: it holds no object.
        path.write_text(yaml.safe_dump_all(kept, sort_keys=False) if kept else "")
    return placed


def _resource_files(directory: Path) -> list[Path]:
    kustomization = yaml.safe_load((directory / KUSTOMIZATION).read_text()) or {}
    files: list[Path] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        files.extend(_resource_files(path) if path.is_dir() else [path])
    return files


def write_top_kustomization(directory: Path, overlay: Path, *, namespace: str | None = None,
                            images: Sequence[Obj] = ()) -> Path:
    """A kustomization in `directory` (created) over `overlay`, with the namespace and image overrides."""
    directory.mkdir(parents=True)
    kustomization: Obj = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # kustomize refuses an absolute path to a directory resource.
        "resources": [os.path.relpath(overlay, directory)],
        "sortOptions": {"order": "fifo"},
    }
    if namespace:
        (directory / "namespace.yaml").write_text(yaml.safe_dump(namespace_transformer(namespace), sort_keys=False))
        kustomization["transformers"] = ["namespace.yaml"]
    if images:
        kustomization["images"] = list(images)
    (directory / KUSTOMIZATION).write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return directory


def namespace_transformer(namespace: str) -> Obj:
    """What `namespace:` does, and also moves RoleBinding subjects that the overlay already put in its namespace.

    A plain `namespace:` only moves subjects in no namespace or in `default`
    (`setRoleBindingSubjects: defaultOnly`), so the autoscaler's RoleBinding would still name its
    ServiceAccount in the overlay's namespace.
    """
    return {
        "apiVersion": "builtin",
        "kind": "NamespaceTransformer",
        "metadata": {"name": "neutrino-namespace", "namespace": namespace},
        "setRoleBindingSubjects": "allServiceAccounts",
        "fieldSpecs": [{"path": "metadata/namespace", "create": True}],
    }


def image_override(name: str, image: str) -> Obj:
    """The `images:` entry that turns the image `name` (with its tag) into `image`.

    kustomize keeps the old tag when the entry has neither `newTag` nor `digest`, so an image
    without either gets `latest`, which is what Kubernetes pulls for it anyway.
    kustomize matches `name` as a pattern (`.` is any character), so only a pool image as odd as
    `neutrino:0x1x0` would be taken for `neutrino:0.1.0`.
    """
    reference, _, digest = image.partition("@")
    slash, colon = reference.rfind("/"), reference.rfind(":")
    new_name, tag = (reference[:colon], reference[colon + 1:]) if colon > slash else (reference, "")
    entry: Obj = {"name": name, "newName": new_name}
    if tag or not digest:
        entry["newTag"] = tag or "latest"
    if digest:
        entry["digest"] = digest
    return entry
