"""The forms of the Alerts page: a rule (each error next to its field) and a webhook target.

A rule's kind decides what it needs (`AlertRule.clean`); the pool must be one the catalog knows. A target's
URL must pass the allow-list (NEUTRINO_WEBHOOK_ALLOWED_HOSTS) when it is saved, and again before each send.
"""

from __future__ import annotations

from typing import Any

from django import forms

from tasks_app.alert_models import AlertRule, WebhookTarget
from tasks_app.core.errors import InvalidArguments
from tasks_app.services.webhooks import webhook_url_check

RULE_FIELDS = ["name", "kind", "function_name", "pool", "threshold", "window_s", "min_finished", "target", "enabled"]
LABELS = {"function_name": "Function", "window_s": "Window (s)", "min_finished": "At least finished",
          "target": "Notify"}


class AlertRuleForm(forms.ModelForm):
    class Meta:
        model = AlertRule
        fields = RULE_FIELDS
        labels = LABELS

    def __init__(self, *args: Any, pools: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pools = pools
        target = self.fields["target"]
        if isinstance(target, forms.ModelChoiceField):
            target.empty_label = "nobody (the dashboard banner only)"

    def clean_pool(self) -> str:
        pool = str(self.cleaned_data.get("pool") or "").strip()
        if pool and self.pools and pool not in self.pools:
            raise forms.ValidationError(f"no pool named {pool}; the pools are {', '.join(self.pools)}")
        return pool

    def clean_function_name(self) -> str:
        return str(self.cleaned_data.get("function_name") or "").strip()


class WebhookTargetForm(forms.ModelForm):
    class Meta:
        model = WebhookTarget
        fields = ["name", "url", "enabled"]
        labels = {"url": "URL"}

    def clean_url(self) -> str:
        url = str(self.cleaned_data.get("url") or "").strip()
        try:
            return webhook_url_check(url=url, field="url")
        except InvalidArguments as exc:
            raise forms.ValidationError(f"Neutrino may not call this URL: {exc.details['fields'][0]['message']}")
