"""The schedule form of the dashboard and the Django admin: each error next to its field.

The rules are the service's (`tasks_app.services.schedules.schedule_check`), the same as the API's:
the form only turns its InvalidArguments into a field error. The task is chosen among the registered
async and gpu tasks (a schedule never fires a sync task); args are JSON checked against its signature.
"""

from __future__ import annotations

import json
import zoneinfo
from typing import Any

from django import forms

from tasks_app.core.errors import InvalidArguments
from tasks_app.core.registry import registered_tasks
from tasks_app.models import MissedRuns, Schedule
from tasks_app.services.schedules import check_name, schedule_check

FIELDS = ["name", "function_name", "args", "cron", "interval_s", "timezone", "missed", "catchup_max", "enabled",
          "description"]
HELP = {
    "name": "Letters, digits, '_', '.' and '-'. Fixed once created.",
    "function_name": "An async or gpu task (sync tasks answer an HTTP caller; a schedule has none).",
    "args": 'JSON object of the task\'s arguments, e.g. {"dataset": "q3"}; checked against its signature.',
    "cron": "5 fields (minute hour day-of-month month day-of-week), or @hourly, @daily, @weekly, @monthly, "
            "@yearly. Leave empty for an interval.",
    "interval_s": "Or fire every this many seconds (anchored at creation, so restarts do not drift).",
    "timezone": "IANA name the cron expression is read in (e.g. Europe/Paris). A 02:30 job on a spring-forward "
                "day runs once, at 03:00.",
    "missed": "Slots that passed while no scheduler ran: skip them, fire once for them all, or fire each "
              "(at most the catch-up max).",
    "catchup_max": "With missed=all: at most this many late slots fire.",
}
LABELS = {"function_name": "Task", "cron": "Cron expression", "interval_s": "Interval (s)",
          "timezone": "Time zone", "missed": "Missed runs", "catchup_max": "Catch-up max"}


def schedulable_tasks() -> list[tuple[str, str]]:
    """(name, label) of every registered task a schedule may fire."""
    return [(name, f"{name} ({spec.execution_mode}, pool {spec.pool})")
            for name, spec in sorted(registered_tasks().items()) if spec.runs_on_nats]


class JSONObjectField(forms.JSONField):
    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return json.dumps(value)
        return super().prepare_value(value)


class ScheduleForm(forms.ModelForm):
    class Meta:
        model = Schedule
        fields = FIELDS
        field_classes = {"args": JSONObjectField}
        widgets = {
            "args": forms.Textarea(attrs={"rows": 3, "class": "mono"}),
            "cron": forms.TextInput(attrs={"class": "mono", "placeholder": "*/5 * * * *", "autocomplete": "off"}),
            "description": forms.TextInput(),
        }
        help_texts = HELP
        labels = LABELS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = schedulable_tasks()
        current = self.instance.function_name if self.instance.pk else ""
        if current and current not in dict(choices):
            choices.append((current, f"{current} (not registered here)"))
        self.fields["function_name"] = forms.ChoiceField(choices=choices, label=LABELS["function_name"],
                                                         help_text=HELP["function_name"])
        self.fields["missed"].choices = [(value, value) for value in MissedRuns.values]  # type: ignore[attr-defined]
        self.fields["args"].required = False
        self.fields["timezone"].widget.attrs.update({"list": "timezones", "autocomplete": "off"})
        if self.instance.pk is not None:
            self.fields["name"].disabled = True
        self.checked: dict[str, Any] = {}

    def clean_args(self) -> Any:
        value = self.cleaned_data.get("args")
        return {} if value in (None, "") else value

    def clean_name(self) -> str:
        name = str(self.cleaned_data.get("name") or "")
        if self.instance.pk is None:
            try:
                check_name(name)
            except InvalidArguments as exc:
                raise forms.ValidationError(exc.message)
        return name

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        try:
            self.checked = schedule_check({field: cleaned.get(field) for field in FIELDS if field != "name"})
        except InvalidArguments as exc:
            field = str(exc.details.get("field") or "")
            field = field.split(".")[0] if field.startswith("args") else field
            self.add_error(field if field in self.fields else None, exc.message)
        return cleaned


def timezone_names() -> list[str]:
    """The IANA names, for the form's suggestions."""
    return sorted(zoneinfo.available_timezones())
