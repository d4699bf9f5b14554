"""Stopping a child process: the one way Neutrino's supervisors, servers and tools do it."""

from __future__ import annotations

import signal
import subprocess
from typing import Any

KILL_WAIT_S = 5.0


def stop_process(process: subprocess.Popen[Any], timeout_s: float, *, terminate: bool = True) -> bool:
    """SIGTERM it (unless `terminate` is False: it was told already, and a second SIGTERM may mean
    "hurry" to it), wait up to `timeout_s`, then SIGKILL. Returns True when it had to be killed."""
    if process.poll() is not None:
        return False
    if terminate:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
        return False
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(KILL_WAIT_S)
        return True
