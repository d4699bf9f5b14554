from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

DEFAULT_POOLS = [
    # The fast pool runs sync tasks inside the HTTP servers; the HPA scales it on CPU.
    {"name": "fast", "kind": "cpu", "mode": "http", "concurrency": 2, "min_replicas": 1, "max_replicas": 20},
    {"name": "async", "kind": "cpu", "mode": "nats", "concurrency": 4, "min_replicas": 1, "max_replicas": 4},
    {
        "name": "gpu", "kind": "gpu", "mode": "nats", "concurrency": 1, "min_replicas": 0, "max_replicas": 2,
        "gpu_count": 1, "node_selector": {"nvidia.com/gpu": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
]


def create_default_pools(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    Pool = apps.get_model("pools_app", "Pool")
    for fields in DEFAULT_POOLS:
        Pool.objects.get_or_create(name=fields["name"], defaults=fields)


class Migration(migrations.Migration):
    dependencies = [("pools_app", "0001_initial")]
    operations = [migrations.RunPython(create_default_pools, migrations.RunPython.noop)]
