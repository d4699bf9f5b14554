"""Django admin for schedules: list, edit and create with the dashboard's form (the same validation as the
API), pause / resume / run now as actions, each fire's history read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from tasks_app.core.errors import NeutrinoError
from tasks_app.core.ports import ports_of
from tasks_app.dashboard.schedule_form import ScheduleForm
from tasks_app.models import Schedule, ScheduleFire
from tasks_app.services import schedules as services
from tasks_app.services.audit import actor_of_request


class ScheduleFireInline(admin.TabularInline):
    model = ScheduleFire
    fields = ["slot_at", "fired_at", "reason", "task"]
    readonly_fields = ["slot_at", "fired_at", "reason", "task"]
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ["-slot_at"]
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[ScheduleFire]:
        return super().get_queryset(request).select_related("task")


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    form = ScheduleForm
    list_display = ["name", "function_name", "cron", "interval_s", "timezone", "enabled", "missed", "source",
                    "next_run_at", "last_fired_at"]
    list_filter = ["enabled", "source", "missed"]
    search_fields = ["name", "function_name", "description"]
    readonly_fields = ["source", "created_at", "updated_at", "created_by", "next_run_at", "last_fired_at",
                       "paused_by"]
    actions = ["pause", "resume", "run_now"]
    inlines = [ScheduleFireInline]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        editable = ["name", "function_name", "args", "cron", "interval_s", "timezone", "missed", "catchup_max",
                    "enabled", "description"]
        return editable + (self.readonly_fields if obj is not None else [])

    def save_model(self, request: HttpRequest, obj: Schedule, form: Any, change: bool) -> None:
        """Through the services, as the dashboard and the API: next_run_at follows the new timing."""
        by = f"user:{request.user.get_username()}"
        if change:
            saved = services.schedule_update(name=obj.name, changes=form.checked, by=by,
                                             actor=actor_of_request(request))
        else:
            saved = services.schedule_create(name=form.cleaned_data["name"], fields=form.checked, created_by=by,
                                             actor=actor_of_request(request))
        obj.pk = saved.pk
        obj.refresh_from_db()

    def delete_model(self, request: HttpRequest, obj: Schedule) -> None:
        services.schedule_delete(name=obj.name, actor=actor_of_request(request))

    @admin.action(description="Pause the selected schedules", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        for schedule in queryset:
            services.schedule_pause(name=schedule.name, by=f"user:{request.user.get_username()}",
                                    actor=actor_of_request(request))
        self.message_user(request, f"paused {queryset.count()} schedule(s)", messages.SUCCESS)

    @admin.action(description="Resume the selected schedules (from their next slot)", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        for schedule in queryset:
            services.schedule_resume(name=schedule.name, actor=actor_of_request(request))
        self.message_user(request, f"resumed {queryset.count()} schedule(s)", messages.SUCCESS)

    @admin.action(description="Run the selected schedules' tasks now", permissions=["run"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        for schedule in queryset:
            try:
                fire = services.schedule_run_now(ports=ports_of(request), name=schedule.name,
                                                 by=f"user:{request.user.get_username()}",
                                                 actor=actor_of_request(request))
            except NeutrinoError as exc:
                self.message_user(request, f"{schedule.name}: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, f"{schedule.name}: task {fire.task_id}", messages.SUCCESS)

    def has_run_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("tasks_app.run_schedule")
