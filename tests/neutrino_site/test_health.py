"""The probes Kubernetes calls: `/healthz` (alive) and `/readyz` (database and NATS), with no login.

`/readyz` says `ok` or `error` per check and nothing more: the reason goes to the log."""

from __future__ import annotations

import pytest

from workers.engine.nats_server import free_port


@pytest.fixture
def nats_url(settings):
    """Point this process's settings at a NATS URL; close whatever bridge it opened afterwards."""

    def use(url: str) -> None:
        settings.NEUTRINO_NATS_URL = url  # the process's ports follow through `setting_changed`

    yield use


@pytest.mark.django_db
def test_healthz_answers_without_a_login(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_readyz_checks_the_database_and_skips_nats_when_not_configured(client, nats_url):
    nats_url("")
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok"}}


@pytest.mark.django_db
def test_readyz_is_503_naming_nats_when_it_cannot_be_reached(client, nats_url, caplog):
    port = free_port()
    nats_url(f"nats://probe:s3cret@127.0.0.1:{port}")
    with caplog.at_level("WARNING", logger="neutrino.health"):
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "checks": {"database": "ok", "nats": "error"},
                               "failed": ["nats"]}
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "neutrino.health")
    assert f"not connected to NATS at nats://127.0.0.1:{port}" in logged  # the why is in the log
    assert "s3cret" not in logged and "s3cret" not in response.content.decode()


@pytest.mark.django_db
def test_readyz_is_503_naming_the_database_before_the_migrations(client, nats_url, caplog):
    from django.db import connection

    from pools_app.models import Pool

    nats_url("")
    with connection.cursor() as cursor:  # as before the migration Job has run (rolled back after the test)
        cursor.execute(f"DROP TABLE {Pool._meta.db_table}")
    with caplog.at_level("WARNING", logger="neutrino.health"):
        response = client.get("/readyz")
    assert response.status_code == 503
    # No exception text (table names, SQL, the database's own words) to an anonymous caller.
    assert response.json() == {"status": "unavailable", "checks": {"database": "error"}, "failed": ["database"]}
    assert "OperationalError" in caplog.text or "ProgrammingError" in caplog.text
    assert Pool._meta.db_table in caplog.text


def test_readyz_is_ok_with_a_live_nats(client, live_nats, db):
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"] == {"database": "ok", "nats": "ok"}


def test_probes_take_only_get(client, db):
    assert client.post("/healthz").status_code == 405
