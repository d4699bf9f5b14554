"""The tasks `bench/chaos.py` submits. Each run appends to an effect log outside the database, so the chaos
run can count what really ran, whatever the database says.

One line per event, written with a single `write` on a file opened O_APPEND (atomic between processes
for lines this short): `<event> <token> <unix time> <pid>`, where event is `start` or `end` and the token
is the one the chaos run gave the task in its arguments (it maps tokens to task ids).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from neutrino import Neutrino

app = Neutrino("chaos")


def effect(log: str, event: str, token: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{event} {token} {time.time():.6f} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


def _attempts_so_far(log: str, token: str) -> int:
    """How many runs of `token` started before this one (a marker file per failing task, not the log)."""
    marker = Path(f"{log}.tries-{token}")
    tries = int(marker.read_text() or 0) if marker.exists() else 0
    marker.write_text(str(tries + 1))
    return tries


@app.task(execution_mode="sync", timeout_ms=5000)
def chaos_sync(token: str, log: str) -> str:
    effect(log, "start", token)
    effect(log, "end", token)
    return token


@app.task(execution_mode="async", timeout_secs=60, max_retries=3)
def chaos_async(token: str, log: str, sleep_s: float = 0.0, fail_times: int = 0) -> str:
    """Sleeps `sleep_s`, then fails its first `fail_times` runs (retries take it to the end) and ends."""
    effect(log, "start", token)
    if sleep_s:
        time.sleep(sleep_s)
    if fail_times and _attempts_so_far(log, token) < fail_times:
        raise RuntimeError(f"chaos: planned failure of {token}")
    effect(log, "end", token)
    return token


@app.task(execution_mode="async", timeout_secs=60)
def chaos_doomed(token: str, log: str) -> None:
    """Always fails, and has no retries: its row must end `failed`."""
    effect(log, "start", token)
    raise ValueError(f"chaos: {token} fails as intended")


@app.task(execution_mode="gpu", timeout_secs=60, max_retries=3)
def chaos_gpu(token: str, log: str, sleep_s: float = 0.0) -> str:
    effect(log, "start", token)
    if sleep_s:
        time.sleep(sleep_s)
    effect(log, "end", token)
    return token
