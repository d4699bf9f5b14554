"""A soak: the whole system as `neutrino dev` starts it, at a steady rate for a long time, no faults.

    python bench/soak.py --minutes 30 --rate 50
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test python bench/soak.py --minutes 30

It prints, at the start, the middle and the end, every process's resident memory (grouped by role), and
throughout how far the ledger lags (from a sync call's answer until its row is in the database) and how
many queued tasks wait; at the end, whether JetStream's stream is empty and every accepted task finished.
Memory that grows between the middle and the end, a lag that grows, or a stream left with messages is
what a soak is for finding.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.chaos import (  # noqa: E402
    FINAL,
    Client,
    Planned,
    Proc,
    System,
    Tally,
    process_tree,
    read_rows,
    running_system,
)

SAMPLE_EVERY_S = 10.0


def role(proc: Proc, root: int) -> str:
    argv = proc.argv
    if argv and argv[0].endswith("nats-server"):
        return "nats-server"
    if "--mode" in argv:
        mode = argv[argv.index("--mode") + 1] if argv.index("--mode") + 1 < len(argv) else ""
        if mode == "http":
            return "http server" if proc.ppid == root else "http request worker"
        return "pool worker"
    if any("sidecar" in part for part in argv):
        return "websocket sidecar"
    return "task child / fork server"


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def memory_by_role(system: System) -> dict[str, tuple[int, float, float]]:
    """role -> (processes, total RSS MB, largest RSS MB), the supervisor included."""
    groups: dict[str, list[float]] = defaultdict(list)
    groups["neutrino dev (supervisor)"].append(rss_mb(system.process.pid))
    for proc in process_tree(system.process.pid):
        groups[role(proc, system.process.pid)].append(rss_mb(proc.pid))
    return {name: (len(sizes), sum(sizes), max(sizes)) for name, sizes in sorted(groups.items())}


@dataclass
class Samples:
    memory: list[tuple[float, dict[str, tuple[int, float, float]]]] = field(default_factory=list)
    ledger_lag_ms: list[tuple[float, float]] = field(default_factory=list)  # (at, ms)
    waiting: list[tuple[float, int]] = field(default_factory=list)  # (at, tasks queued or pending)


def ledger_lag_ms(system: System, client: Client) -> float | None:
    """From a sync call's answer until its row reads `completed` in the database."""
    status, raw = client.call("POST", "/api/chaos_sync", {"args": {"token": "soak", "log": str(system.effect_log)}})
    if status != 200:
        return None
    answered = time.monotonic()
    task_id = json.loads(raw)["task_id"]
    while time.monotonic() - answered < 30:
        if read_rows(system, [task_id]).get(task_id, ("",))[0] == "completed":
            return (time.monotonic() - answered) * 1000
        time.sleep(0.005)
    return None


def stream_messages(system: System) -> int:
    """Messages left in JetStream's task stream, asked as the gateway user `neutrino dev` made."""
    import nats

    from workers.engine.nats_auth import GATEWAY_USER, load_or_create_credentials
    from workers.engine.topology import STREAM

    found = re.search(r"NATS: (nats://\S+?),", system.log_path.read_text(errors="replace"))
    if found is None:
        raise RuntimeError("neutrino dev did not say where NATS is")
    url = load_or_create_credentials(system.data).url(found.group(1), GATEWAY_USER)

    async def ask() -> int:
        nc = await nats.connect(url)
        try:
            return int((await nc.jetstream().stream_info(STREAM)).state.messages)
        finally:
            await nc.close()

    return asyncio.run(ask())


def submit_steadily(system: System, tally: Tally, *, rate: float, until: float) -> None:
    """One sync call for every four queued tasks, at `rate` calls per second in all."""
    client = Client(system.port)
    log = str(system.effect_log)
    next_at = time.monotonic()
    while time.monotonic() < until:
        kind = "sync" if random.random() < 0.2 else "async"
        function = "chaos_sync" if kind == "sync" else "chaos_async"
        planned = Planned(token=os.urandom(8).hex(), kind=kind)
        try:
            status, raw = client.call("POST", f"/api/{function}", {"args": {"token": planned.token, "log": log}})
        except OSError:
            status, raw = 0, b""
        tally.answer(status, raw, f"POST /api/{function}")
        if status in (200, 202):
            planned.task_id, planned.answered = json.loads(raw)["task_id"], status
            tally.accept(planned)
        next_at += 1 / rate
        time.sleep(max(0.0, next_at - time.monotonic()))


def print_memory(label: str, memory: dict[str, tuple[int, float, float]]) -> None:
    print(f"\n  memory at the {label}:")
    for name, (count, total, largest) in memory.items():
        print(f"    {name:<28} {count:>3} process(es) {total:>8.1f} MB in all, largest {largest:>7.1f} MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=50.0, help="calls per second (a fifth of them sync)")
    args = parser.parse_args(argv)
    duration = args.minutes * 60
    with running_system(database_url=os.environ.get("DATABASE_URL") or None, ack_wait_s=30, keep=False) as system:
        print(f"soak: {args.rate:g} calls/s for {args.minutes:g} min on "
              f"{'PostgreSQL' if system.database_url else 'SQLite'} (neutrino dev on port {system.port})")
        tally, samples = Tally(), Samples()
        began = time.monotonic()
        until = began + duration
        submitters = [threading.Thread(target=submit_steadily, args=(system, tally),
                                       kwargs={"rate": args.rate / 2, "until": until}, daemon=True) for _ in range(2)]
        for thread in submitters:
            thread.start()
        probe = Client(system.port)
        middle_taken = False
        while time.monotonic() < until:
            time.sleep(SAMPLE_EVERY_S)
            at = time.monotonic() - began
            if not samples.memory:  # "start": once every process is up and has run tasks
                samples.memory.append((at, memory_by_role(system)))
            lag = ledger_lag_ms(system, probe)
            if lag is not None:
                samples.ledger_lag_ms.append((at, lag))
            waiting = system.query("SELECT count(*) FROM tasks_app_task WHERE status IN ('pending', 'queued')")
            samples.waiting.append((at, int(waiting[0][0])))  # type: ignore[call-overload]
            if not middle_taken and at >= duration / 2:
                samples.memory.append((at, memory_by_role(system)))
                middle_taken = True
            print(f"  {at:6.0f} s  accepted {len(tally.accepted):>7,}  waiting {samples.waiting[-1][1]:>5}  "
                  f"ledger lag {lag if lag is not None else float('nan'):7.1f} ms", flush=True)
        for thread in submitters:
            thread.join()
        samples.memory.append((time.monotonic() - began, memory_by_role(system)))
        deadline = time.monotonic() + 120
        ids = [p.task_id for p in tally.accepted.values()]
        while time.monotonic() < deadline:
            rows = read_rows(system, ids)
            unfinished = [i for i in ids if rows.get(i, ("",))[0] not in FINAL]
            if not unfinished:
                break
            time.sleep(2)
        left_in_stream = stream_messages(system)
        for (at, memory), label in zip(samples.memory, ("start", "middle", "end"), strict=False):
            print_memory(f"{label} ({at:.0f} s)", memory)
        lags = [ms for _, ms in samples.ledger_lag_ms]
        thirds = [lags[: len(lags) // 3], lags[-(len(lags) // 3):]] if len(lags) >= 3 else [lags, lags]
        print(f"\n  ledger lag (sync answer -> row): median {statistics.median(lags):.1f} ms, "
              f"max {max(lags):.1f} ms; first third median {statistics.median(thirds[0]):.1f} ms, "
              f"last third {statistics.median(thirds[1]):.1f} ms" if lags else "\n  ledger lag: no sample")
        print(f"  tasks waiting (queued or pending): max {max(n for _, n in samples.waiting)}, "
              f"at the end {samples.waiting[-1][1]}" if samples.waiting else "")
        print(f"  accepted {len(tally.accepted):,}; unfinished two minutes after the last: {len(unfinished)}; "
              f"answers other than 200/202: {sum(n for s, n in tally.statuses.items() if s not in (200, 202))}")
        print(f"  JetStream stream at the end: {left_in_stream} message(s)")
        ok = not unfinished and left_in_stream == 0 and not tally.unexpected
        print("\nresult: " + ("OK" if ok else "FAILED"))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
