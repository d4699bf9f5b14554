"""A large result end to end: a task returns a file of N MiB (neutrino.File), the worker streams it into
the JetStream object store, and the client downloads it from `GET /tasks/<id>/result` into a file.
Prints the time of each leg, the throughput, and the peak RSS (VmHWM) of every process: the HTTP server
(gunicorn master and workers), the worker, its children, and this client. Run:

    .venv/bin/python bench/large_results.py [--megabytes 100 500]

Each size runs on a fresh stack, so a process's peak is that size's. A warm-up task of 1 MiB runs first,
and its peaks are printed too: what grows from there with the object's size is the object's cost.
The task writes the file itself (the first leg includes that); nats-server keeps the object on disk.
It prints figures and never passes or fails on them.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import neutrino_stack  # noqa: E402
from neutrino import NeutrinoClient  # noqa: E402


def tree(root: int) -> list[int]:
    """`root` and every process below it (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found.extend(frontier)
    return found


def peak_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM) in MiB; 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0) / 1024


def labelled(http_root: int, worker_root: int) -> dict[int, str]:
    """Every process of the stack with what it is."""
    labels: dict[int, str] = {}
    for root, head, rest in ((http_root, "http: gunicorn master", "http: "),
                             (worker_root, "worker: pool worker", "worker: ")):
        for pid in tree(root):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if pid == root:
                labels[pid] = head
            elif "--mode http" in cmdline:
                labels[pid] = rest + "gunicorn worker (serves the download)"
            elif "forkserver" in cmdline:
                labels[pid] = rest + "fork server or a child"
            elif "resource_tracker" in cmdline:
                labels[pid] = rest + "resource tracker"
            else:
                labels[pid] = rest + ("child (ran the task)" if rest == "worker: " else "sync pool child")
    return labels


def run_one(megabytes: int) -> None:
    with neutrino_stack(http_workers=1, concurrency=1) as stack, \
            NeutrinoClient(stack.url, timeout=600) as client, tempfile.TemporaryDirectory() as tmp:
        client.submit("async_big_file", {"megabytes": 1}).wait(timeout=120)  # warm-up: children started
        labels = labelled(_pid_listening(stack.port), _worker_root(stack.env))
        warm = {pid: peak_mib(pid) for pid in labels}
        started = time.perf_counter()
        handle = client.submit("async_big_file", {"megabytes": megabytes})
        info = handle.wait(timeout=1800)
        stored = time.perf_counter()
        out = Path(tmp) / "result.bin"
        downloaded = client.download_result(handle.id, out)
        done = time.perf_counter()
        with open(out, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        assert digest == info["$neutrino_object"]["sha256"] == downloaded.sha256, "the download differs"
        size_mib = downloaded.size / (1 << 20)
        print(f"\n{megabytes} MiB ({stack.database()}): task wrote and worker stored it in {stored - started:.2f} s "
              f"({size_mib / (stored - started):.0f} MiB/s end to end, file write included); "
              f"download {done - stored:.2f} s ({size_mib / (done - stored):.0f} MiB/s); sha256 checked")
        print(f"  {'process':40} {'peak after 1 MiB':>15} {'peak after ' + str(megabytes) + ' MiB':>19}")
        for pid, name in sorted(labels.items(), key=lambda item: item[1]):
            print(f"  {name:40} {warm[pid]:11.1f} MiB {peak_mib(pid):16.1f} MiB")
        client_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"  {'client: download_result (this process)':40} {'':15} {client_mib:16.1f} MiB")


def _pid_listening(port: int) -> int:
    """The gunicorn master: the process whose command line names the port."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "--mode http" in cmdline and f"--port {port}" in cmdline:
                return int(entry.name)
    raise SystemExit(f"no HTTP server on port {port}")


def _worker_root(env: dict[str, str]) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if "--mode nats" in cmdline and env["NEUTRINO_DATA_DIR"].encode() in environ:
                return int(entry.name)
    raise SystemExit("no worker found")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, nargs="+", default=[100, 500])
    args = parser.parse_args()
    for megabytes in args.megabytes:
        run_one(megabytes)


if __name__ == "__main__":
    main()
