"""Dramatiq's side of bench/vs_celery.py: one no-op actor on a Redis broker, no result backend.

The worker is `dramatiq bench.dramatiq_app -p 2 -t 8`. Each run adds one to a Redis counter, which is
how the benchmark knows when all tasks are done; Dramatiq itself keeps no record of a finished message.
"""

from __future__ import annotations

import os

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
COUNTER = "bench:dramatiq:done"

dramatiq.set_broker(RedisBroker(url=REDIS_URL))

# redis-py's pool notices a fork (it checks the pid) and opens new connections in each worker process.
_counter = redis.Redis.from_url(REDIS_URL)


@dramatiq.actor(actor_name="bench_noop", max_retries=0)
def noop() -> None:
    _counter.incr(COUNTER)
