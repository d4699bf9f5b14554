"""PROMETHEUS_MULTIPROC_DIR for `neutrino serve --mode http`: set before anything imports prometheus_client.

prometheus-client picks its storage when it is imported: with this variable set, every metric a
process changes is written to a file of its own in that directory, and `/metrics` sums the files of
all the server's processes. The directory must start empty (old files would add a previous run's
counts), so each `neutrino serve` makes a fresh one under the system's temporary directory, unless the
variable is set already (then its old `*.db` files are removed). Imports nothing heavy on purpose.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir() -> Path:
    """Point PROMETHEUS_MULTIPROC_DIR at an empty directory (this process and the ones it starts inherit it)."""
    chosen = os.environ.get(ENV, "").strip()
    if chosen:
        path = Path(chosen)
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("*.db"):
            old.unlink(missing_ok=True)
    else:
        path = Path(tempfile.mkdtemp(prefix="neutrino-metrics-"))
        os.environ[ENV] = str(path)
        atexit.register(_remove, path, os.getpid())
    return path


def _remove(path: Path, owner: int) -> None:
    # Forked server processes inherit atexit hooks: only the process that made the directory removes it.
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)
