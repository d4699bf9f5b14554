"""Reads for the retention of history: the policy (how long finished tasks are kept), what it would delete,
and how far back the history now reaches.

The policy comes from NEUTRINO_RETENTION_DAYS and NEUTRINO_RETENTION_DAYS_<STATUS>
(`tasks_app.core.conf`); `tasks_app.services.retention` deletes what it says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tasks_app.core.conf import NeutrinoSettings, neutrino_settings
from tasks_app.models import FINISHED_STATUSES, Task


@dataclass(frozen=True)
class RetentionPolicy:
    """How many days each finished status is kept (0: forever). Active tasks are never deleted."""

    days: int
    days_by_status: Mapping[str, int] = field(default_factory=dict)

    def days_for(self, status: str) -> int:
        return self.days_by_status.get(status, self.days)

    @property
    def prunes(self) -> bool:
        """Whether any status is deleted at all."""
        return any(self.days_for(status) for status in FINISHED_STATUSES)

    def cutoffs(self, *, now: datetime) -> dict[str, datetime]:
        """Each status that is deleted, and the created_at before which its rows go."""
        return {str(status): now - timedelta(days=self.days_for(status))
                for status in FINISHED_STATUSES if self.days_for(status)}

    def describe(self) -> str:
        """One line for people: `30 days (failed: 90 days; expired: forever)`."""
        exceptions = [f"{status}: {_days(days)}" for status, days in sorted(self.days_by_status.items())
                      if days != self.days]
        return _days(self.days) + (f" ({'; '.join(exceptions)})" if exceptions else "")


def _days(days: int) -> str:
    if not days:
        return "forever"
    return "1 day" if days == 1 else f"{days} days"


def retention_policy(conf: NeutrinoSettings | None = None) -> RetentionPolicy:
    conf = conf or neutrino_settings()
    return RetentionPolicy(days=conf.retention_days, days_by_status=dict(conf.retention_days_by_status))


@dataclass(frozen=True)
class RetentionOverview:
    policy: RetentionPolicy
    oldest_finished_at: datetime | None  # None: no finished task is kept


def retention_overview() -> RetentionOverview:
    """The policy and the oldest finished task kept: one index seek per status on (status, created_at)."""
    oldest = [Task.objects.filter(status=status).order_by("created_at").values_list("created_at", flat=True).first()
              for status in FINISHED_STATUSES]
    return RetentionOverview(policy=retention_policy(), oldest_finished_at=min((o for o in oldest if o), default=None))


def tasks_past_retention(*, policy: RetentionPolicy, now: datetime) -> dict[str, int]:
    """How many rows of each deleted status are older than the policy (what a prune would delete now)."""
    return {status: Task.objects.filter(status=status, created_at__lt=cutoff).count()
            for status, cutoff in policy.cutoffs(now=now).items()}
