"""The dashboard's Alerts page: rules and their state, webhook targets, and the recent deliveries
(alerts and task callbacks) with their status code, attempts and last error; and the banner every page
shows while a rule fires.

Each change needs its Django model permission (`tasks_app.add_alertrule`, `change_alertrule`,
`delete_alertrule`, `add_webhooktarget`, `delete_webhooktarget`, `change_webhookdelivery` to send one
again); secrets show to those who may change targets. The scheduler evaluates the rules and sends the
webhooks (`workers.scheduler.alert_jobs`); the page redraws its live part every few seconds (htmx).
Thin: forms, services and selectors do the work.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from tasks_app.alert_models import AlertRule, WebhookTarget
from tasks_app.core.conf import neutrino_settings
from tasks_app.core.ports import ports_of
from tasks_app.dashboard.alert_forms import AlertRuleForm, WebhookTargetForm
from tasks_app.dashboard.views import require_permission, wants_partial
from tasks_app.selectors.alerts import (
    BANNER_MAX,
    alert_rules,
    alerts_firing,
    alerts_firing_count,
    webhook_deliveries_recent,
    webhook_targets,
)
from tasks_app.services.alerts import alert_rule_delete, alert_rule_save, webhook_target_delete, webhook_target_save
from tasks_app.services.webhooks import webhook_retry_now

REFRESH_S = 5
BANNER_REFRESH_S = 10


def _alerts_page() -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("alerts"))


@require_GET
def alerts_view(request: HttpRequest) -> HttpResponse:
    can_see_secrets = request.user.has_perm("tasks_app.change_webhooktarget")
    context = {
        "rules": alert_rules(),
        "targets": webhook_targets(),
        "deliveries": webhook_deliveries_recent(),
        "callback_secret": neutrino_settings().callback_secret if can_see_secrets else None,
        "can_see_secrets": can_see_secrets,
        "refresh_s": REFRESH_S,
    }
    template = "tasks_app/_alerts_live.html" if wants_partial(request, "alerts-live") else "tasks_app/alerts.html"
    response = render(request, template, context)
    response["Vary"] = "HX-Request, HX-Target"
    return response


def _rule_form(request: HttpRequest, rule: AlertRule | None) -> HttpResponse:
    form = AlertRuleForm(request.POST or None, instance=rule, pools=ports_of(request).pools.names())
    if request.method == "POST" and form.is_valid():
        saved = alert_rule_save(rule=form.instance)
        messages.success(request, f"Alert rule {saved.name} saved; the scheduler evaluates it within "
                                  f"{neutrino_settings().alerts_every_s:g} s.")
        return _alerts_page()
    return render(request, "tasks_app/alert_form.html", {"form": form, "rule": rule, "what": "rule"})


@require_http_methods(["GET", "POST"])
def alert_rule_new_view(request: HttpRequest) -> HttpResponse:
    require_permission(request, "tasks_app.add_alertrule", to="create alert rules")
    return _rule_form(request, None)


@require_http_methods(["GET", "POST"])
def alert_rule_edit_view(request: HttpRequest, rule_id: int) -> HttpResponse:
    require_permission(request, "tasks_app.change_alertrule", to="change alert rules")
    rule = AlertRule.objects.filter(id=rule_id).first()
    if rule is None:
        raise Http404(f"no alert rule {rule_id}")
    return _rule_form(request, rule)


@require_POST
def alert_rule_delete_view(request: HttpRequest, rule_id: int) -> HttpResponse:
    require_permission(request, "tasks_app.delete_alertrule", to="delete alert rules")
    rule = AlertRule.objects.filter(id=rule_id).first()
    if rule is None:
        raise Http404(f"no alert rule {rule_id}")
    alert_rule_delete(rule=rule)
    messages.success(request, f"Alert rule {rule.name} deleted.")
    return _alerts_page()


@require_http_methods(["GET", "POST"])
def webhook_target_new_view(request: HttpRequest) -> HttpResponse:
    require_permission(request, "tasks_app.add_webhooktarget", to="create webhook targets")
    form = WebhookTargetForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        target = webhook_target_save(target=form.instance)
        messages.success(request, f"Webhook target {target.name} created; its signing secret is on the Alerts page.")
        return _alerts_page()
    return render(request, "tasks_app/alert_form.html", {"form": form, "rule": None, "what": "target"})


@require_POST
def webhook_target_delete_view(request: HttpRequest, target_id: int) -> HttpResponse:
    require_permission(request, "tasks_app.delete_webhooktarget", to="delete webhook targets")
    target = WebhookTarget.objects.filter(id=target_id).first()
    if target is None:
        raise Http404(f"no webhook target {target_id}")
    webhook_target_delete(target=target)
    messages.success(request, f"Webhook target {target.name} deleted; its rules now show in the banner only.")
    return _alerts_page()


@require_POST
def webhook_delivery_retry_view(request: HttpRequest, delivery_id: int) -> HttpResponse:
    require_permission(request, "tasks_app.change_webhookdelivery", to="send webhooks again")
    if webhook_retry_now(delivery_id=delivery_id):
        messages.success(request, f"Delivery {delivery_id} is sent again at the scheduler's next round.")
    else:
        messages.error(request, f"Delivery {delivery_id} was delivered already (or does not exist).")
    return _alerts_page()


@require_GET
def alert_banner_view(request: HttpRequest) -> HttpResponse:
    """The banner alone, for the htmx refresh of any page."""
    return render(request, "tasks_app/_alert_banner.html", alert_banner_context())


def alert_banner_context() -> dict[str, object]:
    firing = alerts_firing()
    count = len(firing) if len(firing) < BANNER_MAX else alerts_firing_count()
    return {"firing_alerts": firing, "firing_count": count, "banner_refresh_s": BANNER_REFRESH_S}
