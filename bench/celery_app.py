"""Celery's side of bench/vs_celery.py: one no-op task on a Redis broker, no result backend.

The worker is `celery -A bench.celery_app worker --pool prefork --concurrency 2`. Each run adds one to a
Redis counter (BENCH_COUNTER), which is how the benchmark knows when all tasks are done; Celery itself
keeps no record of a task once its message is acknowledged.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
COUNTER = "bench:celery:done"

app = Celery("bench", broker=REDIS_URL)
app.conf.update(
    task_ignore_result=True,  # no result backend: the counter below says when all are done
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)

# redis-py's pool notices a fork (it checks the pid) and opens new connections in each prefork child.
_counter = redis.Redis.from_url(REDIS_URL)


@app.task(name="bench.noop")
def noop() -> None:
    _counter.incr(COUNTER)
