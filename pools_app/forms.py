"""The pool form of the dashboard and the Django admin: every field, each error next to its field.

The rules across fields are `Pool.clean()` (`pools_app.validation`); a ModelForm runs them and puts
each message on its field. A pool's name is fixed once it exists (it names the NATS subjects, the
consumer and the Deployment): create a new pool instead. The image must come from an allowed registry
(NEUTRINO_IMAGE_REGISTRIES, `pools_app.validation.image_error`).
"""

from __future__ import annotations

import json
from typing import Any, cast

from django import forms

from pools_app.models import Pool
from pools_app.validation import image_error
from tasks_app.core.conf import neutrino_settings

FIELDS = [
    "name", "kind", "mode", "enabled", "concurrency",
    "min_replicas", "max_replicas", "target_backlog_per_replica", "scale_down_delay_s", "max_backlog",
    "image", "cpu_request", "cpu_limit", "memory_request", "memory_limit", "gpu_count", "gpu_resource",
    "node_selector", "tolerations",
]
SECTIONS = [
    ("Pool", ["name", "kind", "mode", "enabled", "concurrency"]),
    ("Scaling", ["min_replicas", "max_replicas", "target_backlog_per_replica", "scale_down_delay_s", "max_backlog"]),
    ("Kubernetes", ["image", "cpu_request", "cpu_limit", "memory_request", "memory_limit", "gpu_count",
                    "gpu_resource", "node_selector", "tolerations"]),
]
HELP = {
    "name": "Letters, digits and underscores. Tasks name it: @app.task(pool=\"...\"). Fixed once created.",
    "kind": "What the workers need: cpu, gpu or memory. A gpu pool's workers start their children with spawn.",
    "mode": "nats: queued through JetStream to workers. http: only the fast pool (sync tasks, in the servers).",
    "concurrency": "Tasks one worker runs at once (its child processes).",
    "min_replicas": "Workers kept even when idle. 0: none until a task waits (scale to zero).",
    "max_replicas": "Never more workers than this.",
    "target_backlog_per_replica": "Workers wanted = (pending + in flight) / this, rounded up.",
    "scale_down_delay_s": "A lower figure must hold this long before workers are removed.",
    "image": "Image of the pool's pods, from an allowed registry (NEUTRINO_IMAGE_REGISTRIES); "
             "empty: the manifests' Neutrino image.",
    "node_selector": 'JSON object of node labels, e.g. {"nvidia.com/gpu": "true"}.',
    "tolerations": 'JSON list, e.g. [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}].',
}


LABELS = {
    "target_backlog_per_replica": "Target backlog per replica", "scale_down_delay_s": "Scale-down delay (s)",
    "cpu_request": "CPU request", "cpu_limit": "CPU limit", "gpu_count": "GPUs per worker",
    "gpu_resource": "GPU resource name", "max_backlog": "Max backlog",
}


class PrettyJSONField(forms.JSONField):
    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, dict | list):
            return json.dumps(value, indent=None)
        return super().prepare_value(value)


class PoolForm(forms.ModelForm):
    class Meta:
        model = Pool
        fields = FIELDS
        field_classes = {"node_selector": PrettyJSONField, "tolerations": PrettyJSONField}
        widgets = {
            "node_selector": forms.Textarea(attrs={"rows": 2, "class": "mono"}),
            "tolerations": forms.Textarea(attrs={"rows": 3, "class": "mono"}),
        }
        help_texts = HELP
        labels = LABELS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.fields["name"].disabled = True
        for name in ("kind", "mode"):  # the stored values, as written in code and docs
            field = self.fields[name]
            assert isinstance(field, forms.ChoiceField)
            # Django has normalized them to a list of pairs; the stub types the getter as any choices input.
            field.choices = [(value, value) for value, _ in cast("list[tuple[str, str]]", field.choices)]
        for name in ("node_selector", "tolerations"):
            self.fields[name].required = False
        for field in self.fields.values():
            if isinstance(field.widget, forms.NumberInput):
                field.widget.attrs.setdefault("min", 0)

    def clean_image(self) -> str:
        image = str(self.cleaned_data.get("image") or "")
        error = image_error(image.strip(), neutrino_settings().image_registries)
        if error is not None:
            raise forms.ValidationError(error)
        return image

    def clean_node_selector(self) -> Any:
        value = self.cleaned_data.get("node_selector")
        return {} if value in (None, "") else value

    def clean_tolerations(self) -> Any:
        value = self.cleaned_data.get("tolerations")
        return [] if value in (None, "") else value

    def sections(self) -> list[tuple[str, list[forms.BoundField]]]:
        return [(title, [self[name] for name in names]) for title, names in SECTIONS]
