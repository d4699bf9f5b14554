"""The `neutrino` command. Thin: it parses, then calls one function per command.

The SDK imports no Django; the commands that run the server import it inside
their functions, after the environment is set.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neutrino", description="Neutrino task orchestrator")
    parser.add_argument(
        "--tasks",
        help="comma-separated task modules to load (default: $NEUTRINO_TASK_MODULES or examples.tasks)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP gateway or a worker of one pool")
    serve.add_argument("--mode", choices=["http", "nats"], default="http")
    serve.add_argument("--pool", default=None, help="pool to serve (http: fast; nats: required)")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="HTTP server processes")
    serve.add_argument("--threads", type=int, default=32, help="request threads per HTTP process (long-polls hold one)")
    serve.add_argument("--nats-url", default=None, help="NATS server (default: $NEUTRINO_NATS_URL)")
    serve.add_argument("--concurrency", type=int, default=None, help="tasks at once (nats mode)")
    serve.add_argument("--asgi", action="store_true", help="serve the ASGI app under uvicorn")

    dev = commands.add_parser("dev", help="run everything on this machine (SQLite, embedded NATS)")
    dev.add_argument("--host", default=DEFAULT_HOST)
    dev.add_argument("--port", type=int, default=DEFAULT_PORT)
    dev.add_argument("--nats-port", type=int, default=0, help="0 picks a free port")

    commands.add_parser("tasks", help="list the registered tasks")

    manage = commands.add_parser("manage", help="run a Django management command")
    manage.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _prepare_environment(args)
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "dev":
        return cmd_dev(args)
    if args.command == "tasks":
        return cmd_tasks()
    if args.command == "manage":
        return cmd_manage(args.args)
    raise AssertionError(args.command)


def _prepare_environment(args: argparse.Namespace) -> None:
    # Task modules are importable from the directory the command runs in, as with `python -m`.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    existing = os.environ.get("PYTHONPATH", "")
    if cwd not in existing.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (cwd, existing) if p)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "neutrino_site.settings")
    if args.tasks:
        os.environ["NEUTRINO_TASK_MODULES"] = args.tasks
    if getattr(args, "nats_url", None):
        os.environ["NEUTRINO_NATS_URL"] = args.nats_url


def _setup_django() -> None:
    import django

    django.setup()


def cmd_serve(args: argparse.Namespace) -> int:
    if args.mode == "http":
        if args.pool not in (None, "fast"):
            print(f"neutrino serve --mode http serves the fast pool, not {args.pool!r}", file=sys.stderr)
            return 2
        _setup_django()
        from tasks_app.startup import check_tasks

        check_tasks()
        from neutrino_site.server import serve_http

        from tasks_app.conf import neutrino_settings

        asgi = args.asgi or bool(neutrino_settings().asgi_fallback)
        serve_http(host=args.host, port=args.port, workers=args.workers, threads=args.threads, asgi=asgi)
        return 0
    if not args.pool:
        print("neutrino serve --mode nats needs --pool NAME", file=sys.stderr)
        return 2
    _setup_django()
    from workers.nats_worker import run_worker

    return run_worker(pool=args.pool, concurrency=args.concurrency)


def cmd_dev(args: argparse.Namespace) -> int:
    _setup_django()
    from workers.supervisor import run_dev

    return run_dev(host=args.host, port=args.port, nats_port=args.nats_port)


def cmd_tasks() -> int:
    _setup_django()
    from tasks_app.registry import registered_tasks

    tasks = registered_tasks()
    if not tasks:
        print("no tasks registered (set NEUTRINO_TASK_MODULES or pass --tasks)")
        return 0
    rows = [("NAME", "MODE", "POOL", "TIMEOUT", "RETRIES")]
    for name, spec in sorted(tasks.items()):
        rows.append((name, spec.execution_mode, spec.pool, f"{spec.timeout_ms} ms", str(spec.max_retries)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_manage(argv: list[str]) -> int:
    from django.core.management import execute_from_command_line

    execute_from_command_line(["neutrino manage", *argv])
    return 0


if __name__ == "__main__":
    sys.exit(main())
