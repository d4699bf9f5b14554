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
    serve.add_argument("--ws-port", type=int, default=None,
                       help="port of the dashboard's websocket process (http mode; default: "
                            "$NEUTRINO_WS_PORT or --port + 1; 0: none, the pages are not live)")

    dev = commands.add_parser("dev", help="run everything on this machine (SQLite, embedded NATS)")
    dev.add_argument("--host", default=DEFAULT_HOST)
    dev.add_argument("--port", type=int, default=DEFAULT_PORT)
    dev.add_argument("--nats-port", type=int, default=0, help="0 picks a free port")
    dev.add_argument("--ws-port", type=int, default=None, help="dashboard websocket port (default: --port + 1)")
    dev.add_argument("--require-token", action="store_true",
                     help="refuse anonymous API calls (the default when --host is not a loopback address)")

    token = commands.add_parser("token", help="API tokens: create, list, revoke")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="TOKEN_COMMAND")
    token_create = token_commands.add_parser("create", help="create a token and print it (once)")
    token_create.add_argument("name", help="what the token is for, e.g. ci or reports-service")
    token_commands.add_parser("list", help="list the tokens (never their secrets)").add_argument(
        "--all", action="store_true", help="include revoked tokens")
    token_revoke = token_commands.add_parser("revoke", help="revoke a token: calls with it get 401")
    token_revoke.add_argument("name", help="the token's name or its prefix (ntr_...)")

    createadmin = commands.add_parser("createadmin", help="create a staff account for the dashboard")
    createadmin.add_argument("--username", default="admin")
    createadmin.add_argument("--email", default="")
    createadmin.add_argument("--password-stdin", action="store_true",
                             help="read the password from stdin (default: generate one and print it once)")

    commands.add_parser("tasks", help="list the registered tasks")

    manage = commands.add_parser("manage", help="run a Django management command")
    manage.add_argument("args", nargs=argparse.REMAINDER)

    k8s = commands.add_parser("k8s", help="Kubernetes manifests")
    k8s_commands = k8s.add_subparsers(dest="k8s_command", required=True, metavar="K8S_COMMAND")
    _add_render_arguments(k8s_commands.add_parser(
        "render", help="print the manifests and one Deployment per pool of the database, as YAML"))
    up = commands.add_parser("up", help="deploy to Kubernetes: render, server-side apply, wait for rollouts")
    _add_render_arguments(up)
    up.add_argument("--context", default=None, help="kubeconfig context (default: in-cluster, else current)")
    up.add_argument("--dry-run", action="store_true", help="print the YAML it would apply; touch nothing")
    up.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the rollouts")
    # Development and tests: talk to this API server URL instead (default: $NEUTRINO_KUBE_URL).
    up.add_argument("--kube-url", default="", help=argparse.SUPPRESS)

    autoscale = commands.add_parser(
        "autoscale", help="scale the NATS pools' Deployments from their queue depth (runs in the cluster)")
    autoscale.add_argument("--namespace", default="",
                           help="namespace of the pool Deployments (default: $NEUTRINO_KUBE_NAMESPACE or neutrino)")
    autoscale.add_argument("--interval-s", type=float, default=5.0, help="seconds between decisions (default 5)")
    autoscale.add_argument("--once", action="store_true", help="decide and scale once, then exit")
    autoscale.add_argument("--context", default=None, help="kubeconfig context (default: in-cluster, else current)")
    autoscale.add_argument("--nats-url", default=None, help="NATS server (default: $NEUTRINO_NATS_URL)")
    autoscale.add_argument("--kube-url", default="", help=argparse.SUPPRESS)  # a fake API server in tests
    return parser


def _add_render_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overlay", choices=["base", "single-node", "production"], default="base",
                        help="k8s/base (default), or an overlay of k8s/overlays/")
    parser.add_argument("--namespace", default=None, help="namespace of every object (default: neutrino)")
    parser.add_argument("--image", default=None, help="image of the Neutrino containers (default: $NEUTRINO_IMAGE)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _prepare_environment(args)
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "dev":
        return cmd_dev(args)
    if args.command == "tasks":
        return cmd_tasks()
    if args.command == "createadmin":
        return cmd_createadmin(args)
    if args.command == "manage":
        return cmd_manage(args.args)
    if args.command == "token":
        return {"create": cmd_token_create, "list": cmd_token_list, "revoke": cmd_token_revoke}[args.token_command](
            args)
    if args.command == "k8s":
        return cmd_k8s(args)
    if args.command == "up":
        return cmd_up(args)
    if args.command == "autoscale":
        return cmd_autoscale(args)
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
    if args.command == "serve" and args.mode == "http":
        # The pages and the websocket process read the port from the environment.
        if args.ws_port is not None:
            os.environ["NEUTRINO_WS_PORT"] = str(args.ws_port)
        else:
            os.environ.setdefault("NEUTRINO_WS_PORT", str(args.port + 1))


def _setup_django() -> None:
    import django

    django.setup()


def cmd_serve(args: argparse.Namespace) -> int:
    if args.mode == "http":
        if args.pool not in (None, "fast"):
            print(f"neutrino serve --mode http serves the fast pool, not {args.pool!r}", file=sys.stderr)
            return 2
        from neutrino_site.metrics_dir import prepare_multiprocess_dir

        prepare_multiprocess_dir()  # before Django and prometheus_client load, before gunicorn forks
        _setup_django()
        from pools_app.startup import check_tasks

        check_tasks()
        from neutrino_site.server import serve_http
        from tasks_app.core.conf import neutrino_settings

        asgi = args.asgi or bool(neutrino_settings().asgi_fallback)
        serve_http(host=args.host, port=args.port, workers=args.workers, threads=args.threads, asgi=asgi)
        return 0
    if not args.pool:
        print("neutrino serve --mode nats needs --pool NAME", file=sys.stderr)
        return 2
    _setup_django()
    from workers.pool_worker.worker import run_worker

    return run_worker(pool=args.pool, concurrency=args.concurrency)


def cmd_dev(args: argparse.Namespace) -> int:
    _setup_django()
    from workers.dev.supervisor import run_dev

    ws_port = args.ws_port if args.ws_port is not None else args.port + 1
    # Anonymous API calls are fine on a loopback address only, and only when not told otherwise.
    loopback = args.host in ("localhost", "::1") or args.host.startswith("127.")
    return run_dev(host=args.host, port=args.port, nats_port=args.nats_port, ws_port=ws_port,
                   allow_anonymous=loopback and not args.require_token)


def cmd_createadmin(args: argparse.Namespace) -> int:
    _setup_django()
    from django.db import DatabaseError

    from tasks_app.core.errors import Conflict
    from tasks_app.services.tasks import admin_create

    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
    if args.password_stdin and not password:
        print("neutrino createadmin: no password on stdin", file=sys.stderr)
        return 2
    try:
        user, password = admin_create(username=args.username, email=args.email, password=password)
    except Conflict as exc:
        print(f"neutrino createadmin: {exc.message}", file=sys.stderr)
        return 1
    except DatabaseError as exc:
        print(f"neutrino createadmin: cannot write the user ({exc}); run `neutrino manage migrate` first",
              file=sys.stderr)
        return 2
    print(f"created staff user {user.get_username()!r}")
    if not args.password_stdin:
        print(f"password: {password}")
        print("(shown once: only its hash is stored)")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    _setup_django()
    from django.db import DatabaseError

    from tasks_app.core.errors import NeutrinoError
    from tasks_app.services.tokens import token_create

    try:
        token, plaintext = token_create(name=args.name)
    except NeutrinoError as exc:
        print(f"neutrino token create: {exc.message}", file=sys.stderr)
        return 1
    except DatabaseError as exc:
        print(f"neutrino token create: cannot write the token ({exc}); run `neutrino manage migrate` first",
              file=sys.stderr)
        return 2
    print(plaintext)
    print(f"created token {token.name!r} ({token.prefix}…); shown once, only its hash is stored. "
          "Send it as 'Authorization: Bearer <token>'.", file=sys.stderr)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    _setup_django()
    from tasks_app.services.tokens import token_list

    tokens = token_list(include_revoked=args.all)
    if not tokens:
        print("no tokens (create one with `neutrino token create NAME`)")
        return 0

    def when(value: object) -> str:
        return f"{value:%Y-%m-%d %H:%M}" if value is not None else "-"

    rows = [("NAME", "PREFIX", "CREATED", "LAST USED", "REVOKED")]
    rows += [(t.name, t.prefix, when(t.created_at), when(t.last_used_at), when(t.revoked_at)) for t in tokens]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    _setup_django()
    from tasks_app.core.errors import NeutrinoError
    from tasks_app.services.tokens import token_revoke

    try:
        token = token_revoke(name_or_prefix=args.name)
    except NeutrinoError as exc:
        print(f"neutrino token revoke: {exc.message}", file=sys.stderr)
        return 1
    print(f"revoked token {token.name!r} ({token.prefix}…)")
    return 0


def cmd_tasks() -> int:
    _setup_django()
    from tasks_app.core.registry import registered_tasks

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


def cmd_k8s(args: argparse.Namespace) -> int:
    _setup_django()
    from pools_app.k8s.up import RenderOptions, render_command

    options = RenderOptions(overlay=args.overlay, namespace=args.namespace, image=args.image)
    return render_command(options, out=sys.stdout, err=sys.stderr)


def cmd_up(args: argparse.Namespace) -> int:
    _setup_django()
    from pools_app.k8s.up import RenderOptions, up_command

    options = RenderOptions(overlay=args.overlay, namespace=args.namespace, image=args.image)
    return up_command(options, context=args.context, kube_url=args.kube_url, dry_run=args.dry_run,
                      timeout_s=args.timeout, out=sys.stdout, err=sys.stderr)



def cmd_autoscale(args: argparse.Namespace) -> int:
    _setup_django()
    from pools_app.autoscaler.kube import AutoscaleOptions, autoscale_command

    options = AutoscaleOptions(namespace=args.namespace, interval_s=args.interval_s, once=args.once,
                               context=args.context, kube_url=args.kube_url)
    return autoscale_command(options, out=sys.stdout, err=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
