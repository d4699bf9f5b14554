"""The scheduler's alerting work: evaluate the alert rules, and queue and send webhooks (alerts, callbacks).

Both rounds are safe in several schedulers at once (see `tasks_app.services.alerts` and `.webhooks`). The
HTTP client that sends webhooks is built once per process, with the allow-list it checks every URL against.
"""

from __future__ import annotations

from django.utils import timezone

from pools_app.selectors import pool_live_worker_count
from tasks_app.adapters.webhook_sender import WebhookSender
from tasks_app.core.conf import NeutrinoSettings
from tasks_app.core.ports import Ports
from tasks_app.core.webhook_policy import AllowList
from tasks_app.services.alerts import alerts_evaluate
from tasks_app.services.webhooks import callbacks_collect, webhooks_send_due


class Alerting:
    """The `alerts` and `webhooks` jobs of one scheduler process."""

    def __init__(self, conf: NeutrinoSettings) -> None:
        self._heartbeat_s = conf.heartbeat_s
        self._sender = WebhookSender(allow=AllowList.parse(conf.webhook_allowed_hosts),
                                     timeout_s=conf.webhook_timeout_s)

    def evaluate(self, ports: Ports) -> int:
        now = timezone.now()
        return alerts_evaluate(now=now, live_workers=lambda pool: pool_live_worker_count(
            pool=pool, now=now, heartbeat_s=self._heartbeat_s))

    def send(self, ports: Ports) -> int:
        # The callbacks of tasks finished since the last round are queued first, so they go out in this one.
        return callbacks_collect() + webhooks_send_due(sender=self._sender)
