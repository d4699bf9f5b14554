"""The environment a task child runs with: an allow-list, never the parent's secrets.

A worker or gateway process holds `DATABASE_URL`, `DJANGO_SECRET_KEY` and its NATS credentials
(`NEUTRINO_NATS_URL`) in its environment; the task code it runs must not see them. Children start
from a fork server or a fresh interpreter that inherited the parent's environment, so the child
rebuilds `os.environ` from the allow-list before any task module is imported (`scrub`), and blanks
the copy of the original environment the kernel keeps on its stack, which `/proc/self/environ`
shows. The fork server scrubs itself the same way before it preloads the task modules, so module
code run there never sees the secrets either.

What passes: the names in `ALLOWED` (NEUTRINO_URL and NEUTRINO_TOKEN among them: they exist for tasks)
and those starting with `ALLOWED_PREFIXES` (locale, paths, CUDA),
plus the names an operator lists in `NEUTRINO_CHILD_ENV` (comma-separated, e.g. an API key a task
needs). `DENIED` never passes, even when listed.

What it cannot do: a task runs as the same OS user as its parent, so it can still read the parent's
memory or `/proc/<pid>/environ` where the kernel lets that user (`ptrace` rules); to take the secrets
out of reach, run the workers' task code under another user or in another container. Imports no Django.
"""

from __future__ import annotations

import ctypes
import multiprocessing.forkserver
import os
import sys
from collections.abc import Mapping

EXTRA_VARIABLE = "NEUTRINO_CHILD_ENV"

ALLOWED = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM", "PWD", "HOSTNAME",
    "TMPDIR", "TEMP", "TMP", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
    "PYTHONPATH", "PYTHONHASHSEED", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING",
    "PYTHONUTF8", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "HF_HOME", "TORCH_HOME", "XDG_CACHE_HOME",
    # The gateway a task submits its children through (`neutrino.fanout`), and the token meant for that:
    # set it in a worker's environment only for task code (a token limited to the tasks children may call).
    "NEUTRINO_URL", "NEUTRINO_TOKEN",
})
ALLOWED_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "NCCL_")
DENIED = frozenset({"DATABASE_URL", "DJANGO_SECRET_KEY", "NEUTRINO_NATS_URL"})


def allowed_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of `environ` a task child may see."""
    extra = {name.strip() for name in environ.get(EXTRA_VARIABLE, "").split(",") if name.strip()}
    return {
        name: value
        for name, value in environ.items()
        if name not in DENIED
        # the list itself stays, so that scrubbing again (the child after its fork server) keeps the same names
        and (name in ALLOWED or name.startswith(ALLOWED_PREFIXES) or name in extra or name == EXTRA_VARIABLE)
    }


def scrub() -> None:
    """Reduce this process's environment to the allow-list, and blank the kernel's copy of the original."""
    kept = allowed_env(os.environ)
    # clear() unsets every name (unsetenv); update() sets the kept ones again (setenv copies the strings),
    # so nothing in the C environment points into the original block any more when it is blanked.
    os.environ.clear()
    os.environ.update(kept)
    _blank_initial_environ()


def _blank_initial_environ() -> None:
    """Linux, best effort: zero the environment strings the process was started with (its stack), which
    `/proc/<pid>/environ` reads and which a child forked from here inherits."""
    if not sys.platform.startswith("linux"):
        return
    try:
        with open("/proc/self/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state); env_start and env_end are fields 50 and 51 (proc(5))
        start, end = int(fields[47]), int(fields[48])
        if 0 < start < end:
            ctypes.memset(start, 0, end - start)
    except (OSError, IndexError, ValueError):
        pass


def _in_fork_server() -> bool:
    """True while the fork server imports its preload list (this module comes first in it)."""
    main = multiprocessing.forkserver.main.__code__
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code is main:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


# Imported anywhere else (the parent imports it through workers.engine.child) this does nothing.
if _in_fork_server():
    scrub()
