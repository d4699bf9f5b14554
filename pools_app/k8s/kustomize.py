"""`kustomize build` for Neutrino's own manifests, in Python, so `neutrino up` needs no kustomize binary.

Only the part of kustomize that `k8s/` uses is implemented, and the same directories build the same
objects under `kubectl apply -k` (the tests check the subset; write overlays within it):

- `resources:` files (several YAML documents each) and directories holding a `kustomization.yaml`;
- `namespace:` set on every namespaced object and on the ServiceAccount subjects of RoleBindings;
- `images:` (`name` -> `newName` / `newTag`) on the containers and init containers of pod templates;
- `patches:` with a `path:` to a strategic-merge patch, applied to the object the patch names, or,
  with a `target:` (`kind`, `name`, `labelSelector` of `k=v` terms), to every object it matches.

The merge is strategic merge as far as Neutrino's patches need it: maps merge, `null` deletes a key,
lists of maps that all carry a `name` merge item by item on it (as containers, env, volumes and ports
do in Kubernetes), an item `{name: X, $patch: delete}` removes X, a document with `$patch: delete`
removes the object, and any other list is replaced whole. Not supported (refused, not ignored):
generators, components, JSON 6902 patches, `replicas:`, name prefixes and suffixes.

Imports no Django.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
    "CustomResourceDefinition", "PriorityClass", "IngressClass",
}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


class KustomizeError(Exception):
    """A kustomization this builder cannot build; the message names the file."""


# A hook called with the objects of each file resource; it may drop or add objects (see k8s_render).
ResourceHook = Callable[[Path, list[Obj]], list[Obj]]


def load_documents(path: Path) -> list[Obj]:
    try:
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    except yaml.YAMLError as exc:
        raise KustomizeError(f"{path}: not valid YAML: {exc}") from exc
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc:
            raise KustomizeError(f"{path}: every document must be an object with a kind")
    return docs


def build(directory: Path, *, on_resources: ResourceHook | None = None) -> list[Obj]:
    """The objects `kustomize build directory` prints, in resource order."""
    kfile = directory / "kustomization.yaml"
    if not kfile.is_file():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    kustomization = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(kustomization) - SUPPORTED_KEYS
    if unknown:
        raise KustomizeError(f"{kfile}: Neutrino's builder does not support {', '.join(sorted(unknown))}")

    objects: list[Obj] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects.extend(build(path, on_resources=on_resources))
        elif path.is_file():
            docs = load_documents(path)
            objects.extend(on_resources(path, docs) if on_resources else docs)
        else:
            raise KustomizeError(f"{kfile}: resource {entry!r} does not exist")

    for patch_entry in kustomization.get("patches", []):
        objects = _apply_patch_entry(directory, kfile, patch_entry, objects)
    if "namespace" in kustomization:
        objects = [set_namespace(obj, kustomization["namespace"]) for obj in objects]
    for image in kustomization.get("images", []):
        objects = [set_image(obj, image) for obj in objects]
    _check_unique(objects, kfile)
    return objects


def _apply_patch_entry(directory: Path, kfile: Path, entry: Obj, objects: list[Obj]) -> list[Obj]:
    if "path" not in entry:
        raise KustomizeError(f"{kfile}: only patches with a `path:` are supported")
    docs = load_documents(directory / entry["path"])
    if len(docs) != 1:
        raise KustomizeError(f"{directory / entry['path']}: a patch file holds exactly one document")
    patch = docs[0]
    target = entry.get("target")
    if target is None:
        target = {"kind": patch["kind"], "name": patch.get("metadata", {}).get("name")}
    matched = False
    result: list[Obj] = []
    for obj in objects:
        if not matches(obj, target):
            result.append(obj)
            continue
        matched = True
        if patch.get("$patch") == "delete":
            continue
        body = copy.deepcopy(patch)
        if entry.get("target") is not None:
            # With a target the patch's own name is ignored, as in kustomize.
            meta = body.get("metadata") or {}
            meta.pop("name", None)
            if not meta:
                body.pop("metadata", None)
        body.pop("apiVersion", None)
        body.pop("kind", None)
        result.append(strategic_merge(obj, body))
    if not matched:
        raise KustomizeError(f"{kfile}: patch {entry['path']} matches no object ({target})")
    return result


def matches(obj: Obj, target: Obj) -> bool:
    if target.get("kind") and obj.get("kind") != target["kind"]:
        return False
    meta = obj.get("metadata", {})
    if target.get("name") and meta.get("name") != target["name"]:
        return False
    selector = target.get("labelSelector")
    if selector:
        labels = meta.get("labels") or {}
        for term in selector.split(","):
            key, _, value = term.partition("=")
            if labels.get(key.strip()) != value.strip():
                return False
    return True


def strategic_merge(base: Any, patch: Any) -> Any:
    """Merge `patch` into a copy of `base` (see the module docstring for the rules)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            if key == "$patch":
                continue
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value)
            else:
                merged[key] = _without_directives(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        merged_list = copy.deepcopy(base)
        for item in patch:
            index = next((i for i, old in enumerate(merged_list) if old["name"] == item["name"]), None)
            if item.get("$patch") == "delete":
                if index is not None:
                    del merged_list[index]
            elif index is None:
                merged_list.append(_without_directives(item))
            else:
                merged_list[index] = strategic_merge(merged_list[index], item)
        return merged_list
    return _without_directives(patch)


def _named(items: list[Any]) -> bool:
    return all(isinstance(item, dict) and "name" in item for item in items)


def _without_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_directives(v) for k, v in value.items() if k != "$patch"}
    if isinstance(value, list):
        return [_without_directives(v) for v in value if not (isinstance(v, dict) and v.get("$patch") == "delete")]
    return copy.deepcopy(value)


def set_namespace(obj: Obj, namespace: str) -> Obj:
    if obj.get("kind") in CLUSTER_SCOPED:
        return obj
    obj = copy.deepcopy(obj)
    obj.setdefault("metadata", {})["namespace"] = namespace
    if obj.get("kind") == "RoleBinding":
        for subject in obj.get("subjects", []):
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = namespace
    return obj


def pod_containers(obj: Obj) -> list[Obj]:
    """The containers and init containers of an object's pod template (none for other kinds)."""
    if obj.get("kind") not in POD_TEMPLATE_KINDS:
        return []
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def set_image(obj: Obj, image: Obj) -> Obj:
    obj = copy.deepcopy(obj)
    for container in pod_containers(obj):
        current = container.get("image", "")
        name, tag = split_image(current)
        if name != image["name"]:
            continue
        new_name = image.get("newName", name)
        new_tag = image.get("newTag", tag)
        container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name
    return obj


def split_image(image: str) -> tuple[str, str]:
    """`registry:5000/a/b:tag` -> (`registry:5000/a/b`, `tag`); digests stay with the name."""
    if "@" in image:
        return image, ""
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1:]
    return image, ""


def _check_unique(objects: list[Obj], kfile: Path) -> None:
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        key = (obj["kind"], obj.get("metadata", {}).get("namespace", ""), obj.get("metadata", {}).get("name", ""))
        if key in seen:
            raise KustomizeError(f"{kfile}: two objects are {key[0]} {key[2]!r}")
        seen.add(key)
