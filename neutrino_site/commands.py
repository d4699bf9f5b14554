"""One function per `neutrino` command, called by `neutrino_site.cli` once Django is set up."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from django.conf import settings
from django.core.management import execute_from_command_line
from django.db import DatabaseError
from django.utils import timezone

from pools_app.startup import check_tasks
from tasks_app.core.conf import neutrino_settings
from tasks_app.core.errors import Conflict, NeutrinoError
from tasks_app.core.registry import registered_tasks
from tasks_app.models import ApiToken
from tasks_app.selectors.retention import retention_policy, tasks_past_retention
from tasks_app.services.audit import cli_actor
from tasks_app.services.retention import PruneLimits, tasks_prune
from tasks_app.services.tasks import admin_create
from tasks_app.services.tokens import token_create, token_list, token_revoke

# Each process command imports its process where it starts it: a worker has no use for the HTTP server,
# the scheduler or the Kubernetes client, and importing them all cost every process 0.3 s of start-up
# (a draining pool pays it before its first task).

RET_UNSAFE = 78  # EX_CONFIG (sysexits.h): the configuration makes the server unsafe to start
NEW_KEY_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(50))'"


def run(args: argparse.Namespace) -> int:
    if args.command == "token":
        return TOKEN_COMMANDS[args.token_command](args)
    if args.command == "tasks":
        return cmd_tasks()
    if args.command == "manage":
        return cmd_manage(args.args)
    return COMMANDS[args.command](args)


def unsafe_settings(*, serves_http: bool) -> list[str]:
    """Why this process must not start with these settings (empty: it may).

    Checked by every long-running command of a deployment: `serve` (both modes) and `autoscale`.
    `neutrino dev` passes its own generated key and loopback host names to the processes it starts.
    """
    problems = []
    if settings.SECRET_KEY == settings.DEV_SECRET_KEY:
        problems.append(
            "DJANGO_SECRET_KEY is not set (or is the public development default), so anyone could forge "
            "this server's signed cookies (sessions, messages). Generate one and give the same value to "
            f"every Neutrino process of this deployment:\n    export DJANGO_SECRET_KEY=\"$({NEW_KEY_HINT})\"")
    if serves_http and not settings.NEUTRINO_ALLOWED_HOSTS_GIVEN:
        problems.append(
            "DJANGO_ALLOWED_HOSTS is not set: name the host names clients use to reach this server, "
            "comma-separated (e.g. DJANGO_ALLOWED_HOSTS=neutrino.example.com; `.example.com` for a domain "
            "and its subdomains).")
    elif serves_http and "*" in settings.ALLOWED_HOSTS:
        problems.append(
            "DJANGO_ALLOWED_HOSTS is `*`, which answers any Host header (poisoned links, cache keys): name "
            "the host names clients use to reach this server instead (e.g. neutrino.example.com).")
    return problems


def _refuse(command: str, problems: list[str]) -> int:
    for problem in problems:
        print(f"{command}: refusing to start: {problem}", file=sys.stderr)
    return RET_UNSAFE


def cmd_serve(args: argparse.Namespace) -> int:
    problems = unsafe_settings(serves_http=args.mode == "http")
    if problems:
        return _refuse(f"neutrino serve --mode {args.mode}", problems)
    if args.mode == "http":
        if args.pool not in (None, "fast"):
            print(f"neutrino serve --mode http serves the fast pool, not {args.pool!r}", file=sys.stderr)
            return 2
        check_tasks()
        from neutrino_site.server import serve_http

        asgi = args.asgi or bool(neutrino_settings().asgi_fallback)
        serve_http(host=args.host, port=args.port, workers=args.workers, threads=args.threads, asgi=asgi)
        return 0
    if not args.pool:
        print("neutrino serve --mode nats needs --pool NAME", file=sys.stderr)
        return 2
    from workers.pool_worker.worker import run_worker

    return run_worker(pool=args.pool, concurrency=args.concurrency)


def cmd_dev(args: argparse.Namespace) -> int:
    from workers.dev.supervisor import run_dev

    ws_port = args.ws_port if args.ws_port is not None else args.port + 1
    # Anonymous API calls unless told otherwise; the API takes them from loopback callers only
    # (tasks_app.api.auth), whatever --host binds, so other machines need a token.
    return run_dev(host=args.host, port=args.port, nats_port=args.nats_port, ws_port=ws_port,
                   allow_anonymous=not args.require_token)


def cmd_createadmin(args: argparse.Namespace) -> int:
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
    try:
        token, plaintext = token_create(name=args.name, admin=args.admin, allowed_tasks=args.tasks.split(","),
                                        actor=cli_actor())
    except NeutrinoError as exc:
        print(f"neutrino token create: {exc.message}", file=sys.stderr)
        return 1
    except DatabaseError as exc:
        print(f"neutrino token create: cannot write the token ({exc}); run `neutrino manage migrate` first",
              file=sys.stderr)
        return 2
    print(plaintext)
    print(f"created token {token.name!r} ({token.prefix}…, {token_scope(token)}); shown once, only its hash "
          "is stored. Send it as 'Authorization: Bearer <token>'.", file=sys.stderr)
    return 0


def token_scope(token: ApiToken) -> str:
    """What a token may do, in a few words: whose tasks it sees, and which it may call."""
    whose = "admin: all tasks" if token.admin else "own tasks"
    return f"{whose}; calls {','.join(token.allowed_tasks)}" if token.allowed_tasks else whose


def cmd_token_list(args: argparse.Namespace) -> int:
    tokens = token_list(include_revoked=args.all)
    if not tokens:
        print("no tokens (create one with `neutrino token create NAME`)")
        return 0

    def when(value: object) -> str:
        return f"{value:%Y-%m-%d %H:%M}" if value is not None else "-"

    rows = [("NAME", "PREFIX", "SCOPE", "CREATED", "LAST USED", "REVOKED")]
    rows += [(t.name, t.prefix, token_scope(t), when(t.created_at), when(t.last_used_at), when(t.revoked_at))
             for t in tokens]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    try:
        token = token_revoke(name_or_prefix=args.name, actor=cli_actor())
    except NeutrinoError as exc:
        print(f"neutrino token revoke: {exc.message}", file=sys.stderr)
        return 1
    print(f"revoked token {token.name!r} ({token.prefix}…)")
    return 0


def cmd_tasks() -> int:
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
    execute_from_command_line(["neutrino manage", *argv])
    return 0


def cmd_k8s(args: argparse.Namespace) -> int:
    from pools_app.k8s.up import RenderOptions, render_command

    options = RenderOptions(overlay=args.overlay, namespace=args.namespace, image=args.image, host=args.host)
    return render_command(options, out=sys.stdout, err=sys.stderr)


def cmd_up(args: argparse.Namespace) -> int:
    from pools_app.k8s.up import RenderOptions, up_command

    options = RenderOptions(overlay=args.overlay, namespace=args.namespace, image=args.image, host=args.host)
    return up_command(options, context=args.context, kube_url=args.kube_url, dry_run=args.dry_run,
                      timeout_s=args.timeout, out=sys.stdout, err=sys.stderr)


def cmd_scheduler(args: argparse.Namespace) -> int:
    problems = unsafe_settings(serves_http=False)
    if problems:
        return _refuse("neutrino scheduler", problems)
    check_tasks()
    from workers.scheduler.process import run_scheduler

    return run_scheduler(once=args.once)


def cmd_prune(args: argparse.Namespace) -> int:
    """The scheduler's retention job, once, until nothing past the policy is left (no cap per round)."""
    policy = retention_policy()
    now = timezone.now()
    if args.dry_run:
        counts = tasks_past_retention(policy=policy, now=now)
        if args.json:
            print(json.dumps({"policy": policy.describe(), "would_delete": counts}))
        else:
            print(f"history kept {policy.describe()}; would delete {sum(counts.values())} finished tasks"
                  + "".join(f"\n  {status}: {count}" for status, count in counts.items()))
        return 0
    report = tasks_prune(policy=policy, now=now, limits=PruneLimits(max_rows=None, max_seconds=None))
    if args.json:
        print(json.dumps({"policy": policy.describe(), "deleted": report.deleted, "batches": report.batches,
                          "elapsed_s": report.elapsed_s, "longest_batch_s": report.longest_batch_s,
                          "longest_delete_s": report.longest_delete_s}))
    else:
        print(f"history kept {policy.describe()}; deleted {report.total} finished tasks in {report.batches} "
              f"batches ({report.elapsed_s:.1f} s)"
              + "".join(f"\n  {status}: {count}" for status, count in report.deleted.items()))
    return 0


def cmd_autoscale(args: argparse.Namespace) -> int:
    problems = unsafe_settings(serves_http=False)
    if problems:
        return _refuse("neutrino autoscale", problems)
    from pools_app.autoscaler.kube import AutoscaleOptions, autoscale_command

    options = AutoscaleOptions(namespace=args.namespace, interval_s=args.interval_s, once=args.once,
                               context=args.context, kube_url=args.kube_url)
    return autoscale_command(options, out=sys.stdout, err=sys.stderr)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": cmd_serve, "dev": cmd_dev, "createadmin": cmd_createadmin, "k8s": cmd_k8s, "up": cmd_up,
    "autoscale": cmd_autoscale,
    "scheduler": cmd_scheduler, "prune": cmd_prune,
}
TOKEN_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "create": cmd_token_create, "list": cmd_token_list, "revoke": cmd_token_revoke,
}
