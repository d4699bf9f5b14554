"""`GET /metrics`: Prometheus text format, correct under several server processes.

Where the numbers come from (names and labels: docs/metrics.md):

- **this server's processes** (`scope=process`): sync tasks (`tasks_app.metrics`) and the gateway's
  request latency (`RequestLatencyMiddleware`). Under gunicorn every process writes its metrics to
  files in PROMETHEUS_MULTIPROC_DIR (`neutrino serve` makes a fresh directory before it forks, see
  `neutrino_site.metrics_dir`); a scrape, answered by any one process, sums them all, so it sees the
  whole server. A process that exits keeps its counts (gunicorn's `child_exit` marks it dead).
- **the cluster** (`scope=cluster`): queued tasks from the database, queue depth from JetStream,
  workers from heartbeats, replicas from the autoscaler's record. Every server answers the same.

With one server (`neutrino dev`) scrape `/metrics`. With several, scrape each server with
`?scope=process` and one of them (the Service) with `?scope=cluster`: summing the cluster numbers
over servers would count them once per server.

Open to all, like the health probes (`login_not_required`): it shows task and pool names and counts,
no arguments or results. Keep it off the public internet (network policy, or the ingress).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest, multiprocess
from prometheus_client.core import Metric

from pools_app.metrics import PoolCollector
from tasks_app import metrics as task_metrics
from tasks_app.core.conf import neutrino_settings
from tasks_app.core.ports import Broker, ports_of
from tasks_app.selectors.dashboard import pool_depths

REQUEST_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                     float("inf"))
REQUEST_LATENCY = Histogram(
    "neutrino_http_request_duration_seconds",
    "Time the gateway took to answer a request, by method, route pattern and status code.",
    ["method", "route", "status"], buckets=REQUEST_BUCKETS_S, registry=task_metrics.LOCAL,
)
SCOPES = ("all", "process", "cluster")
# Every label value comes from a closed set, so no request can add a series (each costs memory in every
# process and in Prometheus): a method outside these is "other", a path no URL pattern matches is one label.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
UNMATCHED_ROUTE = "<unmatched>"


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class RequestLatencyMiddleware:
    """Observes every request's time in `neutrino_http_request_duration_seconds`. The labels come from closed
    sets: route is the URL pattern (`api/<task_name>` rather than each task's name or id), or `<unmatched>`;
    method is one of HTTP_METHODS or `other`; status is a code this server chose to answer."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = getattr(match, "route", None) or UNMATCHED_ROUTE
        method = request.method if request.method in HTTP_METHODS else OTHER_METHOD
        REQUEST_LATENCY.labels(method, route, str(response.status_code)).observe(time.perf_counter() - started)
        return response


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def process_families() -> list[Metric]:
    if multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return list(registry.collect())
    return list(task_metrics.LOCAL.collect())


def cluster_families(broker: Broker | None) -> list[Metric]:
    pools = PoolCollector(heartbeat_s=neutrino_settings().heartbeat_s,
                          depths=lambda names: pool_depths(broker=broker, pools=names, timeout_s=2.0))
    return [*task_metrics.queued_task_families(), *pools.collect()]


def render(scope: str = "all", *, broker: Broker | None = None) -> bytes:
    families: list[Metric] = []
    if scope in ("all", "process"):
        families += process_families()
    if scope in ("all", "cluster"):
        families += cluster_families(broker)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(task_metrics.merge_families(families)))
    return generate_latest(registry)


@never_cache
@login_not_required
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    scope = request.GET.get("scope", "all")
    if scope not in SCOPES:
        return HttpResponseBadRequest(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}\n",
                                      content_type="text/plain")
    return HttpResponse(render(scope, broker=ports_of(request).broker), content_type=CONTENT_TYPE_LATEST)


def child_exit(server: object, worker: object) -> None:
    """gunicorn's `child_exit` hook: the process is gone; its counters stay, its live gauges go."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(getattr(worker, "pid", 0))
