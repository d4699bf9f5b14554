"""Example tasks that `neutrino dev` serves when NEUTRINO_TASK_MODULES names none.

Try them:
    curl -s -X POST localhost:8000/api/add -H 'content-type: application/json' -d '{"args": {"a": 1, "b": 2}}'
    curl -s -X POST localhost:8000/api/generate_report -d '{"args": {"dataset": "q3"}}'
"""

from __future__ import annotations

import hashlib
import time

import neutrino
from neutrino import Neutrino

app = Neutrino()


@app.task
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@app.task(execution_mode="sync", timeout_ms=1000)
def fast_api(data: dict) -> dict:
    """Echo a JSON object back with its key count."""
    return {"keys": sorted(data), "count": len(data)}


@app.task(execution_mode="sync", timeout_ms=2000)
def checksum(text: str, rounds: int = 1000) -> str:
    """SHA-256 of `text`, hashed `rounds` times (a small CPU-bound task)."""
    digest = text.encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


@app.task(execution_mode="async", timeout_secs=300, max_retries=3)
def generate_report(dataset: str, steps: int = 5, step_s: float = 0.5) -> dict:
    """A long task that reports its progress."""
    for step in range(steps):
        time.sleep(step_s)
        neutrino.progress((step + 1) / steps, f"step {step + 1} of {steps}")
    return {"dataset": dataset, "rows": steps * 1000}


@app.task(execution_mode="gpu", timeout_secs=600)
def matmul(size: int = 512) -> dict:
    """Multiply two random matrices, on the GPU when torch and CUDA are there."""
    try:
        import torch
    except ImportError:
        import random

        n = min(size, 64)
        a = [[random.random() for _ in range(n)] for _ in range(n)]
        total = sum(sum(a[i][k] * a[k][j] for k in range(n)) for i in range(n) for j in range(n))
        return {"device": "cpu (torch not installed)", "size": n, "checksum": total}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.rand(size, size, device=device)
    started = time.perf_counter()
    y = x @ x
    if device == "cuda":
        torch.cuda.synchronize()
    return {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "size": size,
        "ms": (time.perf_counter() - started) * 1000,
        "checksum": float(y.sum()),
    }
