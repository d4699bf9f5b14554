"""[limits] The shared state of rate limits: one row per function (or function and key)."""

from __future__ import annotations

from django.db import models


class RateBucket(models.Model):
    """The rate budget of one function (`key` "") or of one key of it, as a theoretical arrival time.

    `tat_s` (seconds since the epoch) is when the budget would be whole again if no task started from
    now on: a start is allowed while `tat_s - now <= period - interval` and moves it on by one interval
    (GCRA, the token bucket in one number). One conditional UPDATE takes a start, so any number of
    workers and gateways share it on SQLite and PostgreSQL alike.
    """

    function_name = models.CharField(max_length=200)
    key = models.CharField(max_length=200, blank=True, default="")
    tat_s = models.FloatField(default=0.0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["function_name", "key"], name="uniq_rate_bucket")]

    def __str__(self) -> str:
        return f"rate of {self.function_name}{'[' + self.key + ']' if self.key else ''}"
