"""Django admin: API tokens can be created (the secret is shown once, in a message) and revoked there;
schedules are managed in `tasks_app.admin.schedules`."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from tasks_app.models import ApiToken, AuditRecord, BulkAction
from tasks_app.services.audit import actor_of_request
from tasks_app.services.tokens import NAME_MAX, token_create, token_revoke_one


class ApiTokenAddForm(forms.ModelForm):
    # The model keeps a JSON list; people type names separated by commas, as `neutrino token create --tasks`.
    tasks = forms.CharField(required=False, label="Allowed tasks",
                            help_text="Task names separated by commas; empty: the token may call every task.")

    class Meta:
        model = ApiToken
        fields = ["name", "user", "admin"]

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"]).strip()
        if not name or len(name) > NAME_MAX:
            raise forms.ValidationError(f"1 to {NAME_MAX} characters")
        if ApiToken.objects.filter(name=name, revoked_at__isnull=True).exists():
            raise forms.ValidationError("a live token has this name; revoke it first or pick another name")
        return name

    def clean_tasks(self) -> list[str]:
        return [name.strip() for name in str(self.cleaned_data.get("tasks") or "").split(",") if name.strip()]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "user", "admin", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    actions = ["revoke"]
    readonly_fields = ["name", "prefix", "user", "admin", "allowed_tasks", "created_at", "last_used_at", "revoked_at"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ApiTokenAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else []

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else ["name", "user", "admin", "tasks"]

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if change:
            return  # nothing about a token changes but its revocation (the action)
        token, plaintext = token_create(name=obj.name, user=obj.user, admin=obj.admin,
                                        allowed_tasks=form.cleaned_data["tasks"], actor=actor_of_request(request))
        obj.pk, obj.prefix, obj.secret_hash = token.pk, token.prefix, token.secret_hash
        obj.created_at, obj.allowed_tasks = token.created_at, token.allowed_tasks
        obj._state.adding = False
        messages.warning(request, f"Token {token.name!r}: {plaintext}  (copy it now: it is shown once, "
                                  "only its hash is stored)")

    @admin.action(description="Revoke the selected tokens (calls with them get 401)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        actor = actor_of_request(request)
        count = sum(token_revoke_one(token=token, actor=actor) for token in queryset.filter(revoked_at__isnull=True))
        self.message_user(request, f"revoked {count} token(s)", messages.SUCCESS)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Shown, never added, changed or deleted here (not even by a superuser)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AuditRecord)
class AuditRecordAdmin(ReadOnlyAdmin):
    """The audit trail, append-only: the dashboard's Audit page has the same records with filters."""

    list_display = ["at", "actor", "action", "object_type", "object_id", "ip"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor", "object_id"]
    date_hierarchy = "at"


@admin.register(BulkAction)
class BulkActionAdmin(ReadOnlyAdmin):
    """Bulk actions are asked for in the dashboard or the API and worked by the scheduler; stopped there."""

    list_display = ["created_at", "action", "status", "total", "done", "failed", "created_by", "finished_at"]
    list_filter = ["action", "status"]


from tasks_app.admin import alerts  # noqa: E402, F401  (alert rules, webhook targets and deliveries)
from tasks_app.admin import schedules as _schedules  # noqa: E402, F401  (registers ScheduleAdmin)
