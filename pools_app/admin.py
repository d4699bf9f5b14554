"""Django admin for pools (the same form and rules as the dashboard's screens) and the autoscaler's record.

The admin checks Django's model permissions (add, change, delete pool); the pool actions need change_pool.
"""

from __future__ import annotations

import functools
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from pools_app.forms import PoolForm
from pools_app.models import Pool, ScalingDecision, Worker
from pools_app.selectors import pool_active_counts
from pools_app.services import pool_delete, pool_save, pool_set_draining, pool_set_enabled
from tasks_app.core.errors import NeutrinoError
from tasks_app.core.ports import ports_of
from tasks_app.services.audit import actor_of_request


@admin.register(Pool)
class PoolAdmin(admin.ModelAdmin):
    form = PoolForm
    list_display = ["name", "kind", "mode", "enabled", "draining", "concurrency", "min_replicas", "max_replicas",
                    "target_backlog_per_replica", "scale_down_delay_s"]
    list_filter = ["kind", "mode", "enabled", "draining"]
    actions = ["enable", "disable", "drain", "stop_draining"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "mode", "enabled", "concurrency"]}),
        ("Scaling", {"fields": ["min_replicas", "max_replicas", "target_backlog_per_replica", "scale_down_delay_s",
                                "max_backlog"]}),
        ("Kubernetes", {"fields": ["image", "cpu_request", "cpu_limit", "memory_request", "memory_limit",
                                   "gpu_count", "gpu_resource", "node_selector", "tolerations"]}),
    ]

    def save_model(self, request: HttpRequest, obj: Pool, form: Any, change: bool) -> None:
        pool_save(broker=ports_of(request).broker, pool=obj, actor=actor_of_request(request))

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, Any, Any, list[str]]:
        """A pool with tasks waiting or running shows as protected, so the admin refuses to delete it."""
        deleted, counts, perms, protected = super().get_deleted_objects(objs, request)
        pools = list(objs)
        active = pool_active_counts(pools=[p.name for p in pools])
        for pool in pools:
            if pool.name == "fast":
                protected.append("pool fast: it runs the sync tasks inside the HTTP servers")
            elif active.get(pool.name):
                protected.append(f"pool {pool.name}: {active[pool.name]} task(s) pending, queued or running; "
                                 "drain it first (action: Drain)")
        return deleted, counts, perms, protected

    def delete_model(self, request: HttpRequest, obj: Pool) -> None:
        pool_delete(broker=ports_of(request).broker, pool=obj, actor=actor_of_request(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Pool]) -> None:
        for pool in queryset:
            pool_delete(broker=ports_of(request).broker, pool=pool, actor=actor_of_request(request))

    def _each(self, request: HttpRequest, queryset: QuerySet[Pool], action: Any, done: str) -> None:
        broker, actor = ports_of(request).broker, actor_of_request(request)
        for pool in queryset:
            try:
                action(broker=broker, pool=pool, actor=actor)
            except NeutrinoError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                self.message_user(request, f"pool {pool.name} {done}", messages.SUCCESS)

    @admin.action(description="Enable the selected pools", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[Pool]) -> None:
        self._each(request, queryset, functools.partial(pool_set_enabled, enabled=True), "is enabled")

    @admin.action(description="Disable the selected pools (their workers stop)", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[Pool]) -> None:
        self._each(request, queryset, functools.partial(pool_set_enabled, enabled=False), "is disabled")

    @admin.action(description="Drain: refuse new tasks, let the workers finish the waiting ones",
                  permissions=["change"])
    def drain(self, request: HttpRequest, queryset: QuerySet[Pool]) -> None:
        self._each(request, queryset, functools.partial(pool_set_draining, draining=True), "is draining")

    @admin.action(description="Stop draining: take new tasks again", permissions=["change"])
    def stop_draining(self, request: HttpRequest, queryset: QuerySet[Pool]) -> None:
        self._each(request, queryset, functools.partial(pool_set_draining, draining=False), "takes tasks again")


@admin.register(ScalingDecision)
class ScalingDecisionAdmin(admin.ModelAdmin):
    list_display = ["at", "pool", "pending", "in_flight", "current", "desired", "reason", "actuator"]
    list_filter = ["pool", "actuator"]
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ["worker_id", "pool", "host", "pid", "concurrency", "running", "last_heartbeat", "stopped_at"]
    list_filter = ["pool"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
