"""The OpenAPI document: each task is its own path with its argument schema and the seed's vendor fields."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_each_task_is_documented_with_vendor_fields(client) -> None:
    schema = client.get("/api/openapi.json").json()
    add = schema["paths"]["/api/add"]["post"]
    assert add["x-neutrino-mode"] == "sync" and add["x-neutrino-timeout"] == 5000
    assert add["x-neutrino-pool"] == "fast"
    args = add["requestBody"]["content"]["application/json"]["schema"]["properties"]["args"]
    assert args["properties"]["a"]["type"] == "integer" and set(args["required"]) == {"a", "b"}
    report = schema["paths"]["/api/generate_report"]["post"]
    assert report["x-neutrino-mode"] == "async" and report["x-neutrino-timeout"] == 300_000
    assert "202" in report["responses"] and "504" not in report["responses"]
    assert "Idempotency-Key" in report["responses"]["200"]["description"], "a queued task's 200 is only a replay"
    assert schema["paths"]["/api/matmul"]["post"]["x-neutrino-pool"] == "gpu"
    assert "/api/{task_name}" not in schema["paths"]


def test_error_statuses_are_documented(client) -> None:
    add = client.get("/api/openapi.json").json()["paths"]["/api/add"]["post"]
    assert {"404", "413", "422", "500", "504"} <= set(add["responses"])


def test_interactive_docs_are_served(client) -> None:
    response = client.get("/api/docs")
    assert response.status_code == 200 and b"openapi.json" in response.content
