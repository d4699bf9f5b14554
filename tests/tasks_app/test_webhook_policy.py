"""The allow-list of webhook hosts (NEUTRINO_WEBHOOK_ALLOWED_HOSTS): internal addresses refused unless listed,
and a submit whose callback_url it refuses answered 422 naming the field, with no task made."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import ImproperlyConfigured

from tasks_app.core.conf import neutrino_settings
from tasks_app.core.webhook_policy import AllowList, UrlRefused, webhook_destination
from tasks_app.models import Task

DEFAULT = AllowList.parse(["*"])


def resolving_to(*addresses: str):
    """A resolver for names the tests make up (the system's DNS is not the subject here)."""
    return lambda host, port: list(addresses)


@pytest.mark.parametrize(("url", "kind"), [
    ("http://127.0.0.1:8080/hook", "loopback"),
    ("http://127.8.9.10/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),
    ("http://10.1.2.3/hook", "private"),
    ("http://172.16.0.5/hook", "private"),
    ("http://192.168.1.1/hook", "private"),
    ("http://169.254.169.254/latest/meta-data", "link-local"),
    ("http://[fe80::1]/hook", "link-local"),
    ("http://224.0.0.1/hook", "multicast"),
    ("http://0.0.0.0/hook", "unspecified"),
    ("http://240.0.0.1/hook", "reserved"),
    ("http://100.64.0.1/hook", "non-public"),
])
def test_internal_addresses_are_refused_by_default(url: str, kind: str) -> None:
    with pytest.raises(UrlRefused) as refused:
        webhook_destination(url, DEFAULT)
    assert f"a {kind} address" in str(refused.value)
    assert "NEUTRINO_WEBHOOK_ALLOWED_HOSTS" in str(refused.value)


def test_a_name_is_judged_by_every_address_it_resolves_to() -> None:
    with pytest.raises(UrlRefused, match=re.escape("hooks.example.com resolves to 10.0.0.7: a private address")):
        webhook_destination("https://hooks.example.com/x", DEFAULT, resolve=resolving_to("93.184.216.34", "10.0.0.7"))
    dest = webhook_destination("https://hooks.example.com:8443/x?a=1", DEFAULT,
                               resolve=resolving_to("93.184.216.34"))
    assert (dest.host, dest.port, dest.target, dest.addresses) == ("hooks.example.com", 8443, "/x?a=1",
                                                                   ("93.184.216.34",))
    assert dest.host_header == "hooks.example.com:8443"


def test_localhost_by_name_is_refused() -> None:
    with pytest.raises(UrlRefused, match="a loopback address"):
        webhook_destination("http://localhost:9/hook", DEFAULT)


def test_public_addresses_pass_and_listed_internal_ones_too() -> None:
    assert webhook_destination("http://93.184.216.34/hook", DEFAULT).addresses == ("93.184.216.34",)
    listed = AllowList.parse(["*", "127.0.0.1", "10.20.0.0/16", "receiver.internal", ".svc.local"])
    assert webhook_destination("http://127.0.0.1:9/hook", listed).addresses == ("127.0.0.1",)
    assert webhook_destination("http://10.20.3.4/hook", listed).addresses == ("10.20.3.4",)
    assert webhook_destination("http://receiver.internal/h", listed, resolve=resolving_to("10.9.9.9")).host == \
        "receiver.internal"
    assert webhook_destination("http://hooks.ns.svc.local/h", listed, resolve=resolving_to("10.9.9.9")).host == \
        "hooks.ns.svc.local"
    # Listing one internal network allows that network only: the metadata address stays refused.
    for url in ("http://10.21.0.1/hook", "http://169.254.169.254/", "http://127.0.0.2/"):
        with pytest.raises(UrlRefused):
            webhook_destination(url, listed)


def test_without_star_only_listed_hosts_are_called() -> None:
    only = AllowList.parse(["hooks.example.com"])
    assert webhook_destination("https://hooks.example.com/x", only, resolve=resolving_to("93.184.216.34")).port == 443
    with pytest.raises(UrlRefused, match="not in NEUTRINO_WEBHOOK_ALLOWED_HOSTS"):
        webhook_destination("http://93.184.216.34/hook", only)


@pytest.mark.parametrize(("url", "said"), [
    ("ftp://93.184.216.34/x", "http:// or https://"),
    ("http:///path", "has no host"),
    ("http://user:pw@93.184.216.34/x", "user name or password"),
    ("http://93.184.216.34/a b", "spaces or control characters"),
    ("http://93.184.216.34:99999/x", "not a valid URL"),
    ("http://93.184.216.34/" + "x" * 2001, "longer than 2000"),
])
def test_malformed_urls_are_refused_saying_why(url: str, said: str) -> None:
    with pytest.raises(UrlRefused, match=said):
        webhook_destination(url, DEFAULT)


def test_a_name_that_does_not_resolve_is_worth_another_try() -> None:
    def fails(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(UrlRefused) as refused:
        webhook_destination("http://nowhere.invalid/x", DEFAULT, resolve=fails)
    assert not refused.value.final


def test_a_bad_allow_list_entry_stops_the_start(settings) -> None:
    settings.NEUTRINO_WEBHOOK_ALLOWED_HOSTS = ["*", "http://hooks.example.com/"]
    with pytest.raises(ImproperlyConfigured, match=re.escape("http://hooks.example.com/")):
        neutrino_settings()


# --- at submit -------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://10.0.0.1/hook", "http://169.254.169.254/",
                                 "file:///etc/passwd", 42])
def test_a_refused_callback_url_is_422_naming_the_field_and_makes_no_task(client, url: object) -> None:
    response = client.post("/api/echo", {"args": {"value": 1}, "callback_url": url}, content_type="application/json")
    assert response.status_code == 422, response.content
    body = response.json()
    assert body["error"] == "invalid_arguments" and body["message"].startswith("callback_url ")
    assert [f["field"] for f in body["fields"]] == ["callback_url"]
    assert not Task.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_allowed_callback_url_is_kept_on_the_row(client, settings, ledger_flush) -> None:
    settings.NEUTRINO_WEBHOOK_ALLOWED_HOSTS = ["*", "127.0.0.1"]
    response = client.post("/api/echo", {"args": {"value": 1}, "callback_url": "http://127.0.0.1:9/hook"},
                           content_type="application/json")
    assert response.status_code == 200, response.content
    ledger_flush()
    assert Task.objects.get(id=response.json()["task_id"]).callback_url == "http://127.0.0.1:9/hook"
    plain = client.post("/api/echo", {"args": {"value": 2}}, content_type="application/json")
    ledger_flush()
    assert Task.objects.get(id=plain.json()["task_id"]).callback_url is None
