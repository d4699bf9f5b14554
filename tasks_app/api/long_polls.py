"""Long-poll slots: how many `GET /tasks/<id>?wait=` requests one server process lets wait at once.

A waiting long-poll holds a request thread, shared with sync calls, so waits are capped per process
(NEUTRINO_LONG_POLL_MAX) and per caller (NEUTRINO_LONG_POLL_PER_CALLER); see `tasks_app.api.routes.get_task`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.signals import setting_changed
from django.dispatch import receiver


class WaitSlots:
    """Long-polls waiting at once in this process: at most `max_total`, and `max_per_caller` per caller.

    A waiting long-poll holds a request thread (the server's threads are shared with sync calls), so
    their number is capped; a wait beyond a cap is not granted and the caller gets the task as it is
    now. What it cannot do: it counts one process only, so N server processes allow N times as many.
    """

    def __init__(self, *, max_total: int, max_per_caller: int) -> None:
        self.max_total = max_total
        self.max_per_caller = max_per_caller
        self._lock = threading.Lock()
        self._total = 0
        self._by_caller: dict[str, int] = {}

    @contextmanager
    def take(self, caller: str) -> Iterator[bool]:
        """A slot for `caller` while the block runs: yields True, or False when a cap is reached."""
        with self._lock:
            mine = self._by_caller.get(caller, 0)
            granted = self._total < self.max_total and mine < self.max_per_caller
            if granted:
                self._total += 1
                self._by_caller[caller] = mine + 1
        try:
            yield granted
        finally:
            if granted:
                with self._lock:
                    self._total -= 1
                    left = self._by_caller[caller] - 1
                    if left:
                        self._by_caller[caller] = left
                    else:
                        del self._by_caller[caller]


@functools.cache
def wait_slots(max_total: int, max_per_caller: int) -> WaitSlots:
    """This process's long-poll slots (one set per pair of caps)."""
    return WaitSlots(max_total=max_total, max_per_caller=max_per_caller)


@receiver(setting_changed)
def _new_wait_slots_on_change(*, setting: str, **kwargs: object) -> None:
    if setting.startswith("NEUTRINO_LONG_POLL"):
        wait_slots.cache_clear()
