"""Django admin: alert rules and webhook targets can be managed there too; deliveries are read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from tasks_app.alert_models import AlertRule, WebhookDelivery, WebhookTarget
from tasks_app.dashboard.alert_forms import RULE_FIELDS, WebhookTargetForm
from tasks_app.services.alerts import alert_rule_save


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = ["name", "condition", "state", "enabled", "target", "evaluated_at"]
    list_filter = ["state", "kind", "enabled"]
    search_fields = ["name", "function_name", "pool"]
    fields = [*RULE_FIELDS, "state", "state_changed_at", "value", "message", "evaluated_at"]
    readonly_fields = ["state", "state_changed_at", "value", "message", "evaluated_at"]

    def save_model(self, request: HttpRequest, obj: AlertRule, form: Any, change: bool) -> None:
        alert_rule_save(rule=obj)


@admin.register(WebhookTarget)
class WebhookTargetAdmin(admin.ModelAdmin):
    form = WebhookTargetForm  # the URL must pass NEUTRINO_WEBHOOK_ALLOWED_HOSTS
    list_display = ["name", "url", "enabled", "created_at"]
    readonly_fields = ["secret", "created_at"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "event", "url", "status", "attempts", "last_status_code", "last_error"]
    list_filter = ["status", "event"]
    search_fields = ["url", "task_id"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [field.name for field in WebhookDelivery._meta.fields]
