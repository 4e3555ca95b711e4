"""The `agentmeter` command: wires the receiver, the store and the billing API together."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from agentmeter.command.logs import configure_logging
from agentmeter.db import make_engine, migrate
from agentmeter.settings import Settings
from agentmeter.tenants import create_tenant, revoke_key

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from agentmeter.partitions import Month


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        name: getattr(args, name)
        for name in ("host", "grpc_port", "http_port", "api_port")
        if getattr(args, name, None) is not None
    }
    return Settings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    from agentmeter.command.server import serve

    settings = _settings(args)
    engine = make_engine(settings)
    migrate(engine)
    on_ready: Callable[[str], None] | None = None
    if args.demo:
        from agentmeter.command.demo import print_portal_link, seed_demo

        tenant_id = seed_demo(engine)

        def on_ready(base_url: str) -> None:
            print_portal_link(engine, settings, tenant_id, base_url)

    asyncio.run(serve(settings, engine, on_ready))
    return 0


def _tenant_create(args: argparse.Namespace) -> int:
    engine = make_engine(Settings())
    migrate(engine)
    tenant = create_tenant(engine, args.name)
    if args.json:
        print(
            json.dumps(
                {
                    "tenant_id": tenant.tenant_id,
                    "ingest_key": tenant.ingest_key,
                    "admin_key": tenant.admin_key,
                }
            )
        )
    else:
        print(f"tenant_id:  {tenant.tenant_id}")
        print(f"ingest_key: {tenant.ingest_key}")
        print(f"admin_key:  {tenant.admin_key}")
        print("Keys are shown once; store them now.")
    return 0


def _progress_bar(done: int, total: int) -> None:
    width = 30
    filled = width * done // total if total else width
    bar = "#" * filled + "." * (width - filled)
    end = "\n" if done >= total else ""
    print(f"\r[{bar}] {done}/{total} customers", end=end, file=sys.stderr, flush=True)


def _bill(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from agentmeter.tenants import tenant_exists, tenant_ids
    from billing_api.auth import Caller, Role
    from billing_api.errors import ApiError
    from billing_api.invoicing.runs import execute_run, start_run

    engine = make_engine(Settings())
    migrate(engine)
    tenant_id = args.tenant
    if tenant_id is None:
        tenants = tenant_ids(engine)
        if len(tenants) != 1:
            problem = "no tenant yet" if not tenants else "several tenants"
            print(f"{problem}: name one with --tenant", file=sys.stderr)
            return 2
        tenant_id = tenants[0]
    elif not tenant_exists(engine, tenant_id):
        print(f"no tenant {tenant_id!r}", file=sys.stderr)
        return 2
    try:
        with Session(engine) as session, session.begin():
            caller = Caller(tenant_id=tenant_id, actor="agentmeter bill", role=Role.ADMIN)
            run_id = start_run(session, caller, args.period, queue=False).id
    except ApiError as error:  # a bad or future period
        print(error.message, file=sys.stderr)
        return 2
    run = execute_run(engine, tenant_id, run_id, progress=_progress_bar)
    print(
        json.dumps(
            {
                "run_id": run.id,
                "period": run.period,
                "status": run.status,
                "customers": run.total_customers,
                "drafted": run.drafted,
            }
        )
    )
    return 0


def _key_issue(args: argparse.Namespace) -> int:
    """A new ingest key and admin key for a tenant, to rotate keys: deploy the new ones,
    then revoke the old ones (`agentmeter key revoke`)."""
    from agentmeter.tenants import issue_keys, tenant_exists

    engine = make_engine(Settings())
    migrate(engine)
    if not tenant_exists(engine, args.tenant):
        print(f"no tenant {args.tenant!r}", file=sys.stderr)
        return 2
    keys = issue_keys(engine, args.tenant)
    issued = {
        "tenant_id": keys.tenant_id,
        "ingest_key": keys.ingest_key,
        "admin_key": keys.admin_key,
    }
    print(json.dumps(issued))
    return 0


def _tenant_set_customer_keys(args: argparse.Namespace) -> int:
    from pydantic import ValidationError
    from sqlalchemy.orm import Session

    from agentmeter.tenants import find_tenant, tenant_exists
    from billing_api.auth import Caller, Role
    from billing_api.errors import NotFoundError
    from billing_api.tenant.schemas import TenantUpdate
    from billing_api.tenant.service import update_tenant

    try:
        update = TenantUpdate(customer_attribute_keys=args.keys)
    except ValidationError as error:
        problems = "; ".join(e["msg"] for e in error.errors())
        print(f"invalid customer attribute keys: {problems}", file=sys.stderr)
        return 2
    engine = make_engine(_settings(args))
    migrate(engine)
    tenant_id = (
        args.tenant if tenant_exists(engine, args.tenant) else find_tenant(engine, args.tenant)
    )
    try:
        with Session(engine) as session, session.begin():
            caller = Caller(tenant_id=tenant_id or "", actor="command", role=Role.ADMIN)
            keys_given = update.customer_attribute_keys
            tenant = update_tenant(session, caller, customer_attribute_keys=keys_given)
            keys = list(tenant.customer_attribute_keys)
    except NotFoundError:
        print(f"no tenant {args.tenant!r}", file=sys.stderr)
        return 1
    print(json.dumps({"tenant_id": tenant_id, "customer_attribute_keys": keys}))
    return 0


def _key_revoke(args: argparse.Namespace) -> int:
    engine = make_engine(Settings())
    migrate(engine)
    key = sys.stdin.readline().strip()
    if not revoke_key(engine, key):
        print("no such active key", file=sys.stderr)
        return 1
    print("revoked")
    return 0


def _read_password() -> str:
    """The password from a prompt, or the first line of stdin: never an argument (it would
    show in `ps` and shell history)."""
    import getpass

    return getpass.getpass("Password: ") if sys.stdin.isatty() else sys.stdin.readline()


def _user_create(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from billing_api.dashboard.accounts import create_user
    from billing_api.errors import ApiError

    engine = make_engine(Settings())
    migrate(engine)
    password = _read_password()
    try:
        with Session(engine) as session, session.begin():
            user = create_user(session, args.tenant, args.email, password.rstrip("\n"), args.role)
    except ApiError as error:
        print(error.message, file=sys.stderr)
        return 2
    print(json.dumps({"user_id": user.id, "email": user.email, "role": user.role.value}))
    return 0


def _user_set_password(args: argparse.Namespace) -> int:
    """A new password for a dashboard user (rotation, or a forgotten one); the user's
    sessions end."""
    from sqlalchemy.orm import Session

    from billing_api.dashboard.accounts import set_password
    from billing_api.errors import ApiError

    engine = make_engine(Settings())
    migrate(engine)
    password = _read_password()
    try:
        with Session(engine) as session, session.begin():
            found = set_password(session, args.tenant, args.email, password.rstrip("\n"))
    except ApiError as error:
        print(error.message, file=sys.stderr)
        return 2
    if not found:
        print(f"no user {args.email!r} in tenant {args.tenant!r}", file=sys.stderr)
        return 1
    print(json.dumps({"email": args.email, "password": "changed"}))
    return 0


def _jobs_run(args: argparse.Namespace) -> int:
    """Run the background jobs due now once (what `agentmeter serve` does periodically)."""
    from dataclasses import asdict

    from billing_api.jobs.kinds import job_registry
    from billing_api.jobs.worker import run_due_jobs

    engine = make_engine(Settings())
    migrate(engine)
    report = run_due_jobs(engine, job_registry(), limit=args.limit)
    print(json.dumps(asdict(report)))
    return 0


def _usage_partitions(args: argparse.Namespace) -> int:
    """Create this month's usage partition and the next ones (PostgreSQL; a cron job)."""
    from agentmeter.clock import utcnow
    from agentmeter.partitions import ensure_months_ahead, existing_months, partitioned

    engine = make_engine(Settings())
    migrate(engine)
    created = ensure_months_ahead(engine, utcnow(), args.ahead)
    with engine.connect() as connection:
        attached = existing_months(connection) if partitioned(connection) else set()
    months = {"created": sorted(created), "attached": sorted(attached)}
    print(json.dumps({k: [f"{y:04d}-{m:02d}" for y, m in v] for k, v in months.items()}))
    return 0


def _usage_detach(args: argparse.Namespace) -> int:
    """Detach a month's usage partition (PostgreSQL), to archive and drop it."""
    from agentmeter.clock import utcnow
    from agentmeter.partitions import detach_month

    return _on_month(
        args, lambda engine, month: {"detached_tables": detach_month(engine, month, utcnow())}
    )


def _usage_compact(args: argparse.Namespace) -> int:
    """Rebuild a month's usage partitions' indexes (PostgreSQL), writes going on."""
    from agentmeter.partitions import compact_month

    return _on_month(args, lambda engine, month: compact_month(engine, month)._asdict())


def _on_month(
    args: argparse.Namespace, action: Callable[[Engine, Month], dict[str, object]]
) -> int:
    """Run `action` on the store and `args.month`; print its answer as JSON with the month,
    or its refusal (a ValueError: no such month, SQLite) on stderr with exit code 2."""
    from agentmeter.partitions import parse_month

    engine = make_engine(Settings())
    migrate(engine)
    try:
        answer = action(engine, parse_month(args.month))
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    print(json.dumps({"month": args.month, **answer}))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentmeter", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run OTLP receivers, billing API, dashboard")
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--grpc-port", type=int, help="OTLP/gRPC port (default 4317)")
    serve.add_argument("--http-port", type=int, help="OTLP/HTTP port (default 4318)")
    serve.add_argument("--api-port", type=int, help="API, dashboard and portal (default 8000)")
    serve.add_argument("--demo", action="store_true", help="seed a demo tenant with usage")
    serve.set_defaults(run=_serve)

    tenant = commands.add_parser("tenant", help="manage tenants").add_subparsers(
        dest="tenant_command", required=True
    )
    create = tenant.add_parser("create", help="create a tenant and print its keys")
    create.add_argument("name")
    create.add_argument("--json", action="store_true", help="print keys as JSON")
    create.set_defaults(run=_tenant_create)
    customer_keys = tenant.add_parser(
        "set-customer-keys",
        help="set the span attribute keys that name the customer, first match wins",
    )
    customer_keys.add_argument("tenant", help="tenant id or name")
    customer_keys.add_argument("keys", nargs="+", metavar="KEY")
    customer_keys.set_defaults(run=_tenant_set_customer_keys)

    bill = commands.add_parser("bill", help="draft every customer's invoice for a month")
    bill.add_argument("--period", required=True, help="the month, e.g. 2026-11")
    bill.add_argument("--tenant", help="tenant id (default: the only tenant)")
    bill.set_defaults(run=_bill)

    key = commands.add_parser("key", help="manage API keys").add_subparsers(
        dest="key_command", required=True
    )
    issue = key.add_parser("issue", help="issue a new ingest and admin key (JSON)")
    issue.add_argument("--tenant", required=True, help="tenant id")
    issue.set_defaults(run=_key_issue)
    revoke = key.add_parser("revoke", help="revoke the key read from standard input")
    revoke.set_defaults(run=_key_revoke)

    user = commands.add_parser("user", help="manage dashboard users").add_subparsers(
        dest="user_command", required=True
    )
    user_create = user.add_parser(
        "create", help="create a dashboard user; the password is read from standard input"
    )
    user_create.add_argument("email")
    user_create.add_argument("--tenant", required=True, help="tenant id")
    user_create.add_argument("--role", required=True, choices=["admin", "billing", "viewer"])
    user_create.set_defaults(run=_user_create)
    user_password = user.add_parser(
        "set-password",
        help="give a dashboard user a new password read from standard input; ends its sessions",
    )
    user_password.add_argument("email")
    user_password.add_argument("--tenant", required=True, help="tenant id")
    user_password.set_defaults(run=_user_set_password)

    jobs = commands.add_parser("jobs", help="background jobs").add_subparsers(
        dest="jobs_command", required=True
    )
    jobs_run = jobs.add_parser("run", help="run the jobs due now once and print the counts")
    jobs_run.add_argument("--limit", type=int, default=1000, help="at most this many jobs")
    jobs_run.set_defaults(run=_jobs_run)

    usage = commands.add_parser(
        "usage", help="manage the usage table's monthly partitions (PostgreSQL)"
    ).add_subparsers(dest="usage_command", required=True)
    ahead = usage.add_parser("partitions", help="create the coming months' partitions (JSON)")
    ahead.add_argument("--ahead", type=int, default=3, help="months after this one")
    ahead.set_defaults(run=_usage_partitions)
    detach = usage.add_parser("detach", help="detach a month's partition to archive it")
    detach.add_argument("month", help="the month, e.g. 2025-01")
    detach.set_defaults(run=_usage_detach)
    compact = usage.add_parser(
        "compact", help="rebuild a past month's partition indexes, writes going on (JSON)"
    )
    compact.add_argument("month", help="the month, e.g. 2025-01")
    compact.set_defaults(run=_usage_compact)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging()
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
