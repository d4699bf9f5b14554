"""The Alerts page through Django's test client: rules and targets made and refused, permissions, the
deliveries with their codes and errors, the banner on every page, and the Django admin's screens."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from tasks_app.alert_models import AlertKind, AlertRule, AlertState, DeliveryStatus, WebhookDelivery, WebhookTarget
from tasks_app.core.conf import neutrino_settings

pytestmark = pytest.mark.django_db

RULE = {"name": "flaky failing", "kind": "failure_rate", "function_name": "flaky", "pool": "", "threshold": "20",
        "window_s": "600", "min_finished": "5", "target": "", "enabled": "on"}


def test_a_rule_is_made_on_the_page(admin_client: Any, default_pools: Any) -> None:
    page = admin_client.get("/ui/alerts")
    assert page.status_code == 200 and b'id="new-rule-button"' in page.content
    response = admin_client.post("/ui/alerts/rules/new", RULE)
    assert response.status_code == 302 and response["Location"] == "/ui/alerts"
    rule = AlertRule.objects.get(name="flaky failing")
    assert (rule.kind, rule.function_name, rule.threshold, rule.state) == ("failure_rate", "flaky", 20.0, "ok")
    listed = admin_client.get("/ui/alerts").content.decode()
    assert "failure rate of flaky &gt; 20% over 600 s (at least 5 finished)" in listed
    assert "not evaluated yet" in listed and "banner only" in listed


@pytest.mark.parametrize(("change", "field", "said"), [
    ({"function_name": ""}, "function_name", "watches one task function"),
    ({"kind": "backlog", "pool": ""}, "pool", "watches one pool"),
    ({"kind": "backlog", "pool": "nope"}, "pool", "no pool named nope"),
    ({"threshold": "150"}, "threshold", "percentage from 0 to 99.9"),
])
def test_a_bad_rule_is_refused_next_to_its_field(admin_client: Any, default_pools: Any, change: dict, field: str,
                                                 said: str) -> None:
    response = admin_client.post("/ui/alerts/rules/new", {**RULE, **change})
    assert response.status_code == 200
    html = response.content.decode()
    assert f'id="id_{field}_error"' in html and said in html
    assert not AlertRule.objects.exists()


def test_editing_and_deleting_a_rule(admin_client: Any, default_pools: Any) -> None:
    rule = AlertRule.objects.create(name="backlog", kind=AlertKind.BACKLOG, pool="async", threshold=10)
    response = admin_client.post(f"/ui/alerts/rules/{rule.id}/edit", {**RULE, "name": "backlog", "kind": "backlog",
                                                                      "pool": "async", "threshold": "50"})
    assert response.status_code == 302
    assert AlertRule.objects.get(id=rule.id).threshold == 50
    assert admin_client.post(f"/ui/alerts/rules/{rule.id}/delete").status_code == 302
    assert not AlertRule.objects.exists()
    assert admin_client.get(f"/ui/alerts/rules/{rule.id}/edit").status_code == 404


def test_changes_need_their_permissions(viewer_client: Any, default_pools: Any) -> None:
    page = viewer_client.get("/ui/alerts")
    assert page.status_code == 200 and b"new-rule-button" not in page.content
    assert b'id="callback-secret"' not in page.content, "the callback secret shows to those who may change targets"
    assert viewer_client.post("/ui/alerts/rules/new", RULE).status_code == 403
    target = {"name": "x", "url": "http://93.184.216.34/"}
    assert viewer_client.post("/ui/alerts/targets/new", target).status_code == 403
    assert not AlertRule.objects.exists() and not WebhookTarget.objects.exists()


def test_a_target_must_pass_the_allow_list_and_gets_a_secret(admin_client: Any) -> None:
    refused = admin_client.post("/ui/alerts/targets/new", {"name": "local", "url": "http://127.0.0.1:9000/hook",
                                                           "enabled": "on"})
    assert refused.status_code == 200 and "a loopback address" in refused.content.decode()
    assert admin_client.post("/ui/alerts/targets/new", {"name": "ops", "url": "http://93.184.216.34/hook",
                                                        "enabled": "on"}).status_code == 302
    target = WebhookTarget.objects.get(name="ops")
    assert len(target.secret) == 64
    page = admin_client.get("/ui/alerts").content.decode()
    assert target.secret in page and neutrino_settings().callback_secret in page


def test_deliveries_show_their_code_attempts_and_error_and_can_be_sent_again(admin_client: Any) -> None:
    now = timezone.now()
    failed = WebhookDelivery.objects.create(url="http://93.184.216.34/cb", event="task.finished", payload="{}",
                                            status=DeliveryStatus.FAILED, attempts=8, max_attempts=8,
                                            last_status_code=503, last_error="answered 503: busy",
                                            next_attempt_at=now, created_at=now)
    page = admin_client.get("/ui/alerts").content.decode()
    row = page[page.index(f'id="delivery-{failed.id}"'):]
    row = row[:row.index("</tr>")]
    assert "8/8" in row and "503" in row and "answered 503: busy" in row and "Send again" in row
    assert admin_client.post(f"/ui/alerts/deliveries/{failed.id}/retry").status_code == 302
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == ("pending", 0)


def test_the_banner_shows_on_every_page_while_a_rule_fires(admin_client: Any) -> None:
    assert b'class="alert-banner"' not in admin_client.get("/").content
    AlertRule.objects.create(name="gpu stuck", kind=AlertKind.NO_WORKER, pool="gpu", state=AlertState.FIRING,
                             message="3 task(s) wait in pool gpu and no worker is live")
    AlertRule.objects.create(name="off", kind=AlertKind.BACKLOG, pool="gpu", state=AlertState.FIRING, enabled=False)
    for path in ("/", "/ui/overview", "/ui/alerts"):
        html = admin_client.get(path).content.decode()
        assert 'class="alert-banner"' in html and "gpu stuck" in html and "1 alert firing" in html, path
        assert ">off<" not in html
    partial = admin_client.get("/ui/alerts/banner").content.decode()
    assert "gpu stuck" in partial and "<html" not in partial


def test_the_live_part_is_served_alone_to_htmx(admin_client: Any) -> None:
    partial = admin_client.get("/ui/alerts", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="alerts-live").content.decode()
    assert 'id="alerts-live"' in partial and "<html" not in partial and 'id="alert-rules"' in partial


def test_the_django_admin_lists_rules_targets_and_deliveries(admin_client: Any) -> None:
    AlertRule.objects.create(name="backlog", kind=AlertKind.BACKLOG, pool="async", threshold=10)
    for path in ("/admin/tasks_app/alertrule/", "/admin/tasks_app/webhooktarget/", "/admin/tasks_app/webhookdelivery/",
                 "/admin/tasks_app/alertrule/add/", "/admin/tasks_app/webhooktarget/add/"):
        assert admin_client.get(path).status_code == 200, path
    refused = admin_client.post("/admin/tasks_app/webhooktarget/add/", {"name": "meta", "enabled": "on",
                                                                        "url": "http://169.254.169.254/"})
    assert refused.status_code == 200 and "link-local" in refused.content.decode()
    assert not WebhookTarget.objects.exists()
