"""What the scheduler does, one `Job` each: a service called every `every_s` seconds with the process's ports.

Every job is safe to run in several processes at once (two gateways' schedulers, a restart in the middle
of a tick): each claims its rows with conditional UPDATEs or unique rows, never with a lock held in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.utils import timezone

from tasks_app.core.conf import NeutrinoSettings
from tasks_app.core.ports import Ports
from tasks_app.selectors.retention import retention_policy
from tasks_app.services.bulk import bulk_work
from tasks_app.services.delays import tasks_expire_due, tasks_release_due
from tasks_app.services.fan_in import groups_fire_due
from tasks_app.services.retention import tasks_prune
from tasks_app.services.schedules import schedules_fire_due
from workers.scheduler.alert_jobs import Alerting

SCHEDULES_EVERY_S = 0.5  # how late past its slot a schedule's task may be queued
# A bulk action asked for in the dashboard or the API starts within about this long; each round works it
# for `tasks_app.services.bulk.ROUND_S` and the next one follows this long after.
BULK_EVERY_S = 0.2

# A delayed task is queued within about this long after its run_at (plus the publish and the ledger's batch).
RELEASE_EVERY_S = 0.2
# A waiting task is ended `expired` within about this long after its expires_at (a worker's claim refuses
# it at once anyway).
EXPIRE_EVERY_S = 1.0
# A group whose last member ended by a path without the fan-in hook (the Django admin) fires within this.
GROUPS_EVERY_S = 2.0


@dataclass(frozen=True)
class Job:
    name: str
    every_s: float
    # Does one round of the job; returns how many things it did (tasks queued, rows deleted, ...).
    run: Callable[[Ports], int]


def scheduler_jobs(conf: NeutrinoSettings) -> list[Job]:
    """The jobs of a scheduler process, in the order one tick runs them."""
    alerting = Alerting(conf)
    jobs = [
        Job("schedules", SCHEDULES_EVERY_S, lambda ports: schedules_fire_due(ports=ports)),
        Job("release_delayed", RELEASE_EVERY_S, lambda ports: tasks_release_due(ports=ports)),
        Job("expire_tasks", EXPIRE_EVERY_S, lambda ports: tasks_expire_due(ports=ports)),
        Job("bulk_actions", BULK_EVERY_S, lambda ports: bulk_work(ports=ports)),
        Job("groups", GROUPS_EVERY_S, lambda ports: groups_fire_due(ports=ports)),
        Job("alerts", conf.alerts_every_s, alerting.evaluate),  # alert rules: ok <-> firing, notifications queued
        Job("webhooks", conf.webhooks_every_s, alerting.send),  # task callbacks queued; due webhooks sent
    ]
    if retention_policy(conf).prunes:
        jobs.append(Job("retention", conf.retention_every_s, prune_history))
    return jobs


def prune_history(ports: Ports) -> int:
    """Delete the finished tasks past the retention policy (one capped round); how many went."""
    return tasks_prune(policy=retention_policy(), now=timezone.now()).total
