"""The `neutrino` command. Thin: it parses, sets the environment up, starts Django, then hands over to
`neutrino_site.commands`, one function per command.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from neutrino_site.metrics_dir import prepare_multiprocess_dir

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
                     help="refuse anonymous API calls (without it they are allowed from this machine's "
                          "loopback addresses only, whatever --host binds)")

    token = commands.add_parser("token", help="API tokens: create, list, revoke")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="TOKEN_COMMAND")
    token_create = token_commands.add_parser("create", help="create a token and print it (once)")
    token_create.add_argument("name", help="what the token is for, e.g. ci or reports-service")
    token_create.add_argument("--admin", action="store_true",
                              help="it sees, cancels and retries every task (default: only the tasks it created)")
    token_create.add_argument("--tasks", default="", metavar="A,B",
                              help="comma-separated tasks it may call (default: every task)")
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

    scheduler = commands.add_parser(
        "scheduler", help="fire delayed tasks and schedules, expire tasks, prune old history (one or more may run)")
    scheduler.add_argument("--once", action="store_true", help="run each job once, then exit")
    scheduler.add_argument("--nats-url", default=None, help="NATS server (default: $NEUTRINO_NATS_URL)")

    prune = commands.add_parser(
        "prune", help="delete the finished tasks older than the retention policy keeps (NEUTRINO_RETENTION_DAYS)")
    prune.add_argument("--dry-run", action="store_true", help="count what it would delete; delete nothing")
    prune.add_argument("--json", action="store_true", help="print what it did as one JSON object")

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
    parser.add_argument("--host", default=None,
                        help="host name users reach Neutrino at: the Ingress, its TLS certificate, "
                             "DJANGO_ALLOWED_HOSTS (default: neutrino.example.com)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _prepare_environment(args)
    if args.command == "serve" and args.mode == "http":
        prepare_multiprocess_dir()  # before Django and prometheus_client load, before gunicorn forks
    # Django and the apps load only now, with the environment above set (and not at all for --help).
    import django
    from django.apps import apps

    if not apps.ready:
        # Once per process: a second setup rebuilds the logging handlers on whatever sys.stderr is at that
        # moment, which a caller in the same process (a test capturing output) closes afterwards.
        django.setup()
    from neutrino_site import commands

    return commands.run(args)


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


if __name__ == "__main__":
    sys.exit(main())
