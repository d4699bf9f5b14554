"""Shared fixtures. Real services only: a SQLite file (or PostgreSQL via DATABASE_URL) and a real nats-server.

A missing external program skips its tests on a laptop and fails them under CI=true.
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(condition: bool, reason: str) -> None:
    """Skip when something external is missing; under CI=true that is a failure instead."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI needs this: {reason}")
    pytest.skip(reason)


@pytest.fixture
def ledger_flush():
    """Wait until the ledger writer of this process has written what it was given."""
    from tasks_app import runtime

    def flush() -> None:
        assert runtime.ledger().flush(timeout_s=10), "ledger writer did not flush within 10 s"

    return flush


@pytest.fixture(autouse=True)
def _fresh_pool_cache():
    from pools_app.selectors import forget_cached_pools

    forget_cached_pools()
    yield
    forget_cached_pools()


@pytest.fixture
def default_pools(django_db_blocker):
    """The pools the migrations create (transactional tests flush them away after each test)."""
    import importlib

    from pools_app.models import Pool

    migration = importlib.import_module("pools_app.migrations.0002_default_pools")
    with django_db_blocker.unblock():
        for fields in migration.DEFAULT_POOLS:
            Pool.objects.get_or_create(name=fields["name"], defaults=fields)
    return {p.name: p for p in Pool.objects.all()}
