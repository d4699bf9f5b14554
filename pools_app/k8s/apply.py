"""Apply rendered objects with server-side apply, then wait for their rollouts with a live progress display.

Rollout rules, as `kubectl rollout status` has them: a Deployment is done when the controller has seen
its latest spec (`observedGeneration`) and every replica is updated and available; a StatefulSet when
every replica is ready (and, where the status says so, on the update revision); a Job when it has
succeeded. A Job that failed stops the wait at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from pools_app.k8s.client import KubeClient, KubeError, KubeUnreachable, Obj
from pools_app.k8s.render import describe

WAITED_KINDS = ("StatefulSet", "Job", "Deployment")


def apply_all(client: KubeClient, objects: Sequence[Obj], *, out: TextIO) -> list[KubeError]:
    """Apply every object in order; report each; return the errors (the rest are still applied)."""
    errors: list[KubeError] = []
    for obj in objects:
        try:
            client.apply(obj)
        except KubeUnreachable as exc:
            errors.append(exc)  # the next calls would fail the same way
            break
        except KubeError as exc:
            errors.append(exc)
            print(f"  failed   {describe(obj)}", file=out)
            if exc.status == 404 and "namespaces" in exc.message:
                break  # every other object would fail the same way
            continue
        print(f"  applied  {describe(obj)}", file=out)
    return errors


@dataclass(frozen=True)
class Rollout:
    done: bool
    text: str
    failed: bool = False


def rollout_state(obj: Obj | None) -> Rollout:
    if obj is None:
        return Rollout(False, "not found")
    kind = obj["kind"]
    spec = obj.get("spec", {})
    status = obj.get("status") or {}
    if kind == "Job":
        if int(status.get("succeeded", 0)) >= 1:
            return Rollout(True, "complete")
        for condition in status.get("conditions") or []:
            if condition.get("type") == "Failed" and condition.get("status") == "True":
                return Rollout(False, f"failed: {condition.get('message') or condition.get('reason')}", failed=True)
        return Rollout(False, "running")
    wanted = int(spec.get("replicas", 1))
    generation = int(obj.get("metadata", {}).get("generation", 0))
    if int(status.get("observedGeneration", 0)) < generation:
        return Rollout(False, f"0/{wanted} ready, waiting for the controller")
    ready = int(status.get("readyReplicas", 0))
    if kind == "StatefulSet":
        revision_ok = status.get("updateRevision", "") == status.get("currentRevision", "")
        done = ready >= wanted and int(status.get("updatedReplicas", wanted)) >= wanted and revision_ok
        return Rollout(done, f"{ready}/{wanted} ready")
    updated = int(status.get("updatedReplicas", 0))
    available = int(status.get("availableReplicas", 0))
    total = int(status.get("replicas", 0))
    done = updated >= wanted and available >= wanted and total <= updated
    text = f"{available}/{wanted} available" + ("" if done or updated >= wanted else f", {updated} updated")
    return Rollout(done, text)


class Progress:
    """One line per object, redrawn in place on a terminal; elsewhere a line whenever one changes."""

    def __init__(self, out: TextIO, *, live: bool | None = None) -> None:
        self.out = out
        self.live = out.isatty() if live is None else live
        self._shown: dict[str, str] = {}
        self._drawn = 0

    def show(self, lines: dict[str, str]) -> None:
        width = max((len(name) for name in lines), default=0)
        rendered = {name: f"  {name.ljust(width)}  {text}" for name, text in lines.items()}
        if self.live:
            if self._drawn:
                self.out.write(f"\x1b[{self._drawn}F")
            for line in rendered.values():
                self.out.write(f"\x1b[2K{line}\n")
            self._drawn = len(rendered)
        else:
            for name, line in rendered.items():
                if self._shown.get(name) != line:
                    self.out.write(line + "\n")
        self._shown = rendered
        self.out.flush()


def wait_rollouts(client: KubeClient, objects: Sequence[Obj], *, timeout_s: float, out: TextIO,
                  poll_s: float = 2.0, live: bool | None = None,
                  clock: Callable[[], float] = time.monotonic) -> bool:
    """Wait until every StatefulSet, Job and Deployment among `objects` is rolled out; False on timeout."""
    waited = [obj for obj in objects if obj.get("kind") in WAITED_KINDS]
    if not waited:
        return True
    progress = Progress(out, live=live)
    deadline = clock() + timeout_s
    while True:
        states: dict[str, Rollout] = {}
        for obj in waited:
            meta = obj["metadata"]
            try:
                live_obj = client.get(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
                states[describe(obj)] = rollout_state(live_obj)
            except KubeError as exc:
                states[describe(obj)] = Rollout(False, f"cannot read it: {exc.status} {exc.message}")
        progress.show({name: ("done  " if s.done else "....  ") + s.text for name, s in states.items()})
        failed = [name for name, s in states.items() if s.failed]
        if failed:
            print(f"rollout failed: {', '.join(failed)}", file=out)
            return False
        if all(s.done for s in states.values()):
            return True
        if clock() >= deadline:
            pending = [name for name, s in states.items() if not s.done]
            print(f"timed out after {timeout_s:.0f} s waiting for: {', '.join(pending)}", file=out)
            print("  see why with: kubectl -n NAMESPACE describe <kind> <name>; kubectl -n NAMESPACE get pods",
                  file=out)
            return False
        time.sleep(poll_s)
