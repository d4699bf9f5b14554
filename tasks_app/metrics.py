"""Task metrics: where each number comes from, and why.

    neutrino_tasks_total{function, pool, mode, status}      counter, finished tasks
    neutrino_task_duration_seconds{function, mode}           histogram, run time of completed tasks

Two sources, split by mode, so no task is counted twice:

- **sync tasks** are counted where they finish: in the HTTP server process that ran them
  (`task_run_sync` calls `sync_task_finished`). Thousands a second can finish, so a scrape must not
  count rows; these are prometheus-client metrics, kept per process in PROMETHEUS_MULTIPROC_DIR
  files under gunicorn and summed over the processes at scrape time (`neutrino_site.metrics`).
- **queued tasks** (async, gpu, ...) finish in worker processes that may run on other machines and
  come and go with the autoscaler; counters kept in them would vanish with each scaled-down worker
  and need every worker scraped. The database already has every final state, so these are read at
  scrape time (`queued_task_families`), one grouped query, cached a few seconds. They are counters
  as long as task rows are not deleted (Neutrino deletes none); the query reads every finished queued
  row, which costs ~0.1 s per million rows on SQLite.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from django.db.models import Count, Q, Sum
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from tasks_app.models import FINISHED_STATUSES, Task, TaskStatus

# Tasks last from milliseconds (sync) to hours (gpu training).
DURATION_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                      900.0, 3600.0, float("inf"))
TASKS = "neutrino_tasks"
DURATION = "neutrino_task_duration_seconds"
TASKS_HELP = "Finished tasks by function, pool, mode and final status (completed, failed, cancelled, expired)."
DURATION_HELP = "Run time of completed tasks, per function (sync: in the HTTP servers; else: in a pool's workers)."
QUEUED_CACHE_S = 5.0

# This process's metrics (in single-process mode they live here; under gunicorn they are also written
# to PROMETHEUS_MULTIPROC_DIR, and `neutrino_site.metrics` reads them from there).
LOCAL = CollectorRegistry(auto_describe=True)
SYNC_TASKS = Counter(TASKS, TASKS_HELP, ["function", "pool", "mode", "status"], registry=LOCAL)
SYNC_DURATION = Histogram(DURATION, DURATION_HELP, ["function", "mode"], buckets=DURATION_BUCKETS_S,
                          registry=LOCAL)


def sync_task_finished(*, function: str, pool: str, status: str, duration_s: float | None) -> None:
    """Count a sync task that ended here; a completed one's run time goes into the histogram."""
    SYNC_TASKS.labels(function, pool, "sync", status).inc()
    if status == TaskStatus.COMPLETED and duration_s is not None:
        SYNC_DURATION.labels(function, "sync").observe(duration_s)


_cache_lock = threading.Lock()
_cache: tuple[float, list[Metric]] = (0.0, [])


def queued_task_families(*, max_age_s: float = QUEUED_CACHE_S) -> list[Metric]:
    """`neutrino_tasks` and `neutrino_task_duration_seconds` of the queued tasks, from the database."""
    global _cache
    with _cache_lock:
        at, families = _cache
        if time.monotonic() - at < max_age_s and families:
            return families
        families = _read_queued()
        _cache = (time.monotonic(), families)
        return families


def _read_queued() -> list[Metric]:
    finished = Task.objects.exclude(execution_mode="sync").filter(status__in=FINISHED_STATUSES)
    tasks = CounterMetricFamily(TASKS, TASKS_HELP, labels=["function", "pool", "mode", "status"])
    row: Mapping[str, Any]  # the two loops below read rows of two shapes
    for row in finished.values("function_name", "pool", "execution_mode", "status").annotate(n=Count("id")):
        tasks.add_metric([row["function_name"], row["pool"], row["execution_mode"], row["status"]], row["n"])
    duration = HistogramMetricFamily(DURATION, DURATION_HELP, labels=["function", "mode"])
    buckets = {f"le_{i}": Count("id", filter=Q(duration_ms__lte=le * 1000))
               for i, le in enumerate(DURATION_BUCKETS_S[:-1])}
    completed = finished.filter(status=TaskStatus.COMPLETED, duration_ms__isnull=False)
    # A Mapping: the plugin's row type lacks the le_* keys that **buckets adds.
    rows: Iterable[Mapping[str, Any]] = completed.values("function_name", "execution_mode").annotate(
        n=Count("id"), total_ms=Sum("duration_ms"), **buckets)
    for row in rows:
        cumulative = [(floatToGoString(le), float(row[f"le_{i}"])) for i, le in enumerate(DURATION_BUCKETS_S[:-1])]
        cumulative.append(("+Inf", float(row["n"])))
        duration.add_metric([row["function_name"], row["execution_mode"]], cumulative,
                            sum_value=float(row["total_ms"] or 0.0) / 1000)
    return [tasks, duration]


def forget_cached_queued() -> None:
    global _cache
    with _cache_lock:
        _cache = (0.0, [])


def merge_families(families: Iterable[Metric]) -> list[Metric]:
    """Families with the same name (this process's and the database's) as one, samples together."""
    merged: dict[str, Metric] = {}
    for family in families:
        known = merged.get(family.name)
        if known is None:
            copy = Metric(family.name, family.documentation, family.type, family.unit)
            copy.samples = list(family.samples)
            merged[family.name] = copy
        else:
            known.samples.extend(family.samples)
    return list(merged.values())
