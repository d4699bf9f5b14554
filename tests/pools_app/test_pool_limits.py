"""What a pool may ask for: images from allowed registries only (NEUTRINO_IMAGE_REGISTRIES), and bounded
concurrency and replicas. Through the dashboard's form and the Django admin, as an admin meets them."""

from __future__ import annotations

import pytest

from pools_app.models import Pool
from tests.pools_app.test_manage_views import VALID

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(60)]

NOT_ALLOWED = "is not from an allowed registry"


@pytest.fixture
def admin_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", password=None))
    return client


def new_pool(client, **changes: str):
    return client.post("/ui/pools/new", {**VALID, **changes})


@pytest.mark.parametrize("image", ["evil.example.com/miner:1", "neutrino-miner:1", "neutrino/miner:1",
                                   "docker.io/library/neutrino:0.1.0"])
def test_an_image_from_another_registry_is_refused_with_a_message(admin_client, default_pools, image) -> None:
    response = new_pool(admin_client, image=image)
    assert response.status_code == 200
    page = response.content.decode()
    assert NOT_ALLOWED in page and "NEUTRINO_IMAGE_REGISTRIES" in page
    assert not Pool.objects.filter(name="a100").exists()


@pytest.mark.parametrize("image", ["", "neutrino:0.1.0", "neutrino:0.2.0-gpu"])
def test_the_shipped_image_and_the_default_are_accepted(admin_client, default_pools, image) -> None:
    assert new_pool(admin_client, image=image).status_code == 302
    assert Pool.objects.get(name="a100").image == image


def test_the_operator_sets_the_allowed_registries(admin_client, default_pools, settings) -> None:
    settings.NEUTRINO_IMAGE_REGISTRIES = ["registry.example.com", "ghcr.io/acme/"]
    assert NOT_ALLOWED in new_pool(admin_client, image="registry.example.com.evil.io/x:1").content.decode()
    assert NOT_ALLOWED in new_pool(admin_client, image="neutrino:0.1.0").content.decode()
    assert new_pool(admin_client, image="registry.example.com/team/neutrino:2").status_code == 302
    assert new_pool(admin_client, name="b", image="ghcr.io/acme/worker@sha256:" + "a" * 64).status_code == 302


def test_the_default_allows_the_repository_of_neutrino_image(admin_client, default_pools, settings) -> None:
    settings.NEUTRINO_IMAGE = "registry.example.com:5000/neutrino:0.1.0"
    assert new_pool(admin_client, image="registry.example.com:5000/neutrino:0.3.0").status_code == 302
    assert NOT_ALLOWED in new_pool(admin_client, name="b", image="registry.example.com:5000/other:1").content.decode()


def test_an_edit_to_another_image_is_refused_in_the_dashboard_and_the_admin(admin_client, default_pools) -> None:
    pool = Pool.objects.get(name="async")
    edit = {**VALID, "name": "async", "kind": "cpu", "gpu_count": "0", "image": "evil.example.com/x:1"}
    assert NOT_ALLOWED in admin_client.post("/ui/pools/async/edit", edit).content.decode()
    response = admin_client.post(f"/admin/pools_app/pool/{pool.pk}/change/", edit)
    assert response.status_code == 200 and NOT_ALLOWED in response.content.decode()
    added = admin_client.post("/admin/pools_app/pool/add/", {**VALID, "image": "evil.example.com/x:1"})
    assert added.status_code == 200 and NOT_ALLOWED in added.content.decode()
    assert Pool.objects.get(name="async").image == "" and not Pool.objects.filter(name="a100").exists()


@pytest.mark.parametrize(("field", "value", "message"), [
    ("concurrency", "257", "At most 256 tasks at once per worker"),
    ("max_replicas", "101", "At most 100."),
    ("gpu_count", "17", "At most 16 GPUs per worker."),
])
def test_concurrency_replicas_and_gpus_are_bounded(admin_client, default_pools, field, value, message) -> None:
    response = new_pool(admin_client, **{field: value})
    assert response.status_code == 200 and message in response.content.decode()
    added = admin_client.post("/admin/pools_app/pool/add/", {**VALID, field: value})
    assert added.status_code == 200 and message in added.content.decode()
    assert not Pool.objects.filter(name="a100").exists()
    assert new_pool(admin_client, concurrency="256", max_replicas="100", gpu_count="16").status_code == 302
