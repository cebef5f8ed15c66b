"""The `gateway` command: serve, manage API keys, seed a demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import re
import signal
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from multiprocessing import resource_tracker

from gateway import shutdown
from gateway.access_log import AccessLogger
from gateway.app import create_app
from gateway.appkeys import DRAIN
from gateway.audit import AuditLock
from gateway.auth import generate_api_key
from gateway.catalog import CatalogUnavailable
from gateway.catalog.factory import open_catalog
from gateway.client import (
    add_client_commands,
    is_client_command,
    positive_id,
    run_client_command,
)
from gateway.demo import create_demo, describe
from gateway.errors import GatewayError
from gateway.logs import configure_logging
from gateway.models import UNSCOPED, Principal, Role
from gateway.recordings import Recordings
from gateway.retention import Retention, RetentionRules, SweepReport, recording_size
from gateway.settings import VARIABLES, Settings, SettingsError, load_settings
from gateway.storage.factory import open_storages

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
TENANT_RE = r"[a-z0-9][a-z0-9_-]{0,63}"


def _configure_logging(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)


def _base_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # noqa: S104
    return f"http://{host}:{settings.port}"


def _run_worker(settings: Settings) -> None:
    _configure_logging(settings)
    app = create_app(settings)
    # Not web.run_app: it closes kept-alive connections at once on SIGTERM (see
    # gateway/shutdown.py for the drain that replaces its stop).
    asyncio.run(shutdown.serve(
        app, app[DRAIN], host=settings.host, port=settings.port,
        reuse_port=settings.workers > 1, grace=settings.shutdown_grace,
        access_log=logging.getLogger("aiohttp.access"), access_log_class=AccessLogger,
        keepalive_timeout=settings.keepalive_timeout, header_timeout=settings.header_timeout,
        send_timeout=settings.send_timeout,
    ))


def serve(settings: Settings) -> int:
    """Run the gateway; with several workers, one process each on a shared port."""
    print(f"Gateway listening on {_base_url(settings)} "
          f"({settings.workers} worker{'s' if settings.workers > 1 else ''}, "
          f"data in {settings.data_dir})", flush=True)
    if settings.workers == 1:
        # Held until the handlers are in place (shutdown.serve unblocks them): a stop
        # signal that comes while the app starts waits, rather than killing it.
        signal.pthread_sigmask(signal.SIG_BLOCK, shutdown.STOP_SIGNALS)
        _run_worker(settings)
        return EXIT_OK
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_run_worker, args=(settings,), name=f"worker-{i}")
               for i in range(settings.workers)]

    def forward(signum: int, _frame: object) -> None:
        # Each worker drains on its own (gateway/shutdown.py); the parent waits for all.
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signum)

    # Stop signals are held while the workers start: the workers inherit the mask
    # (fork and exec keep it) until their handlers are in place, and the parent
    # forwards what came meanwhile once all have started. Before this, a SIGTERM in
    # a worker's first second killed it outright and `serve` exited 1. The resource
    # tracker of multiprocessing unblocks both signals when it is launched, which
    # the first start() would do: it is launched first.
    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, shutdown.STOP_SIGNALS)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for worker in workers:
        worker.start()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, shutdown.STOP_SIGNALS)
    for worker in workers:
        worker.join()
    return EXIT_OK if all(w.exitcode == 0 for w in workers) else EXIT_FAILURE


async def _check_catalog(settings: Settings) -> None:
    """Reach the catalog (migrating it when configured) before any worker starts, so
    that a wrong URL or an old schema is one line of error, not a worker's traceback."""
    await (await open_catalog(settings)).close()


async def _db_upgrade(settings: Settings) -> str:
    """Bring the catalog's schema up to date; what was done, as one line."""
    if settings.catalog != "postgres":
        from gateway.catalog.sqlite import MIGRATIONS

        await (await open_catalog(settings)).close()  # SQLite migrates as it opens
        return (f"SQLite catalog {settings.catalog_path} is at schema version "
                f"{len(MIGRATIONS)}")
    from gateway.catalog import pg_schema
    from gateway.catalog.postgres import connect, describe_url

    conn = await connect(settings.database_url, wait=settings.database_timeout)
    try:
        start, end = await pg_schema.upgrade(conn)
    except pg_schema.SchemaMismatch as exc:
        raise CatalogUnavailable(f"{describe_url(settings.database_url)}: {exc}") from None
    finally:
        await conn.close()
    where = describe_url(settings.database_url)
    if start == end:
        return f"Catalog {where} is already at schema version {end}"
    return f"Catalog {where} upgraded from schema version {start} to {end}"


async def _create_key(settings: Settings, principal: Principal) -> str:
    catalog = await open_catalog(settings)
    try:
        key = generate_api_key()
        await catalog.add_api_key(key.key_hash, key.prefix, principal)
        return key.key
    finally:
        await catalog.close()


async def _list_keys(settings: Settings) -> None:
    catalog = await open_catalog(settings)
    try:
        keys = await catalog.list_api_keys()
    finally:
        await catalog.close()
    print(f"{'PREFIX':<14}{'USER':>8}  {'TENANT':<16}{'ROLE':<10}{'CREATED':<22}REVOKED")
    for key in keys:
        print(f"{key.prefix:<14}{key.user_id:>8}  {key.tenant:<16}{key.role:<10}"
              f"{key.created_at:<22}{key.revoked_at or '-'}")


async def _revoke_key(settings: Settings, prefix: str) -> bool:
    catalog = await open_catalog(settings)
    try:
        return await catalog.revoke_api_key(prefix)
    finally:
        await catalog.close()


async def _storage_command(settings: Settings, action: str, only: str | None) -> int:
    async with AsyncExitStack() as stack:
        storages = await open_storages(settings, stack)
        if only is not None and only not in storages:
            print(f"gateway: no storage named {only!r} (have: {', '.join(storages)})",
                  file=sys.stderr)
            return EXIT_FAILURE
        failed = False
        for name, storage in storages.items():
            if only is not None and name != only:
                continue
            where = ", ".join(f"{k} {v}" for k, v in storage.describe().items()
                              if k not in ("name", "type") and v)
            label = f"{name} ({storage.backend}{', ' + where if where else ''})"
            if name == storages.default:
                label += " [default]"
            if action == "list":
                print(label)
                continue
            try:
                report = await storage.check()
            except GatewayError as exc:
                failed = True
                print(f"FAILED  {label}: {exc.detail}")
            else:
                print(f"ok      {label}: wrote, read back and deleted {report.object_key}")
        await storages.close()
    return EXIT_FAILURE if failed else EXIT_OK


STANDALONE_ONLY = ("gateway: error: {what} is a standalone feature; in sidecar mode the "
                   "upstream meeting API owns its recordings")


async def _retention_sweep(settings: Settings, rules: RetentionRules,
                           dry_run: bool) -> SweepReport:
    """One sweep through the same code as the background task."""
    catalog = await open_catalog(settings)
    try:
        async with AsyncExitStack() as stack:
            storages = await open_storages(settings, stack)
            try:
                recordings = Recordings(catalog, storages, cache_ttl=0,
                                        lock=AuditLock.from_tenants(settings.tenants))
                retention = Retention(catalog, recordings, rules,
                                      batch=settings.retention_batch)
                return await retention.sweep(dry_run=dry_run)
            finally:
                await storages.close()
    finally:
        await catalog.close()


def _retention_run(settings: Settings, *, dry_run: bool, as_json: bool) -> int:
    if settings.sidecar:
        print(STANDALONE_ONLY.format(what="retention"), file=sys.stderr)
        return EXIT_USAGE
    rules = RetentionRules.from_settings(settings.retention_days, settings.tenants)
    report = asyncio.run(_retention_sweep(settings, rules, dry_run))
    if as_json:
        print(json.dumps({
            "enabled": rules.enabled,
            "dry_run": dry_run,
            "recordings": [{"id": r.id, "tenant": r.tenant, "user_id": r.user_id,
                            "created_at": r.created_at, "status": str(r.status),
                            "file_size_bytes": recording_size(r)} for r in report.removed],
            "file_size_bytes": report.removed_bytes,
            "failed": [r.id for r in report.failed],
            "held": report.held,
            "already_deleted": report.gone,
        }, indent=2))
    elif not rules.enabled:
        print("Retention is off: GATEWAY_RETENTION_DAYS is 0 and no tenant sets "
              "retention_days; nothing to delete.")
    else:
        action = "would delete" if dry_run else "deleted"
        print(f"{'':<13}{'RECORDING':<18}{'TENANT':<16}{'USER':>8}  {'CREATED':<22}"
              f"{'STATUS':<13}BYTES")
        for r in report.removed:
            print(f"{action:<13}{r.id:<18}{r.tenant:<16}{r.user_id:>8}  {r.created_at:<22}"
                  f"{r.status!s:<13}{recording_size(r)}")
        for r in report.failed:
            print(f"{'FAILED':<13}{r.id:<18}{r.tenant:<16}{r.user_id:>8}  {r.created_at:<22}"
                  f"{r.status!s:<13}{recording_size(r)}")
        summary = report.summary()
        print(summary[0].upper() + summary[1:] + ".")
    return EXIT_FAILURE if report.failed_count else EXIT_OK


async def _set_legal_hold(settings: Settings, recording_id: int, held: bool) -> bool:
    catalog = await open_catalog(settings)
    try:
        return await catalog.set_legal_hold(recording_id, UNSCOPED, held) is not None
    finally:
        await catalog.close()


def _legal_hold_command(settings: Settings, recording_id: int, held: bool) -> int:
    if settings.sidecar:
        print(STANDALONE_ONLY.format(what="legal hold"), file=sys.stderr)
        return EXIT_USAGE
    if not asyncio.run(_set_legal_hold(settings, recording_id, held)):
        print(f"gateway: no recording {recording_id}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"Recording {recording_id} is {'on' if held else 'released from'} legal hold")
    return EXIT_OK


def _tenant(value: str) -> str:
    if not re.fullmatch(TENANT_RE, value):
        raise argparse.ArgumentTypeError(f"must match {TENANT_RE}")
    return value




def build_parser() -> argparse.ArgumentParser:
    variables = "\n".join(f"  {v.name:<26} {v.doc}" for v in VARIABLES)
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Recordings gateway: authenticated streaming of meeting recordings.",
        epilog=f"Settings come from the environment:\n{variables}\n\n"
               "Exit status: 0 success, 1 failure, 2 bad usage or settings; the client "
               "commands\n(upload, recordings list|get) add 3 not found, 4 key refused, "
               "5 gateway unreachable.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_cmd = commands.add_parser("serve", help="run the HTTP server")
    serve_cmd.add_argument("--host", help="listen address (overrides GATEWAY_HOST)")
    serve_cmd.add_argument("--port", help="listen port (overrides GATEWAY_PORT)")
    serve_cmd.add_argument("--workers", help="worker processes (overrides GATEWAY_WORKERS)")
    serve_cmd.add_argument("--demo", action="store_true",
                           help="create the demo user, key and recording first")

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True, metavar="ACTION")
    create = keys.add_parser("create", help="create a key; it is printed as the last line")
    create.add_argument("--user-id", type=positive_id, required=True)
    create.add_argument("--tenant", type=_tenant, default="default")
    create.add_argument("--role", choices=[str(r) for r in Role], default=str(Role.RECORDER))
    keys.add_parser("list", help="list keys (prefixes only; keys are stored hashed)")
    revoke = keys.add_parser("revoke", help="revoke a key by its prefix")
    revoke.add_argument("prefix")

    storage = commands.add_parser("storage", help="inspect and check the storages")\
        .add_subparsers(dest="storage_command", required=True, metavar="ACTION")
    storage.add_parser("list", help="list the configured storages (no secrets)")
    check = storage.add_parser(
        "check", help="write, read back and delete a test object; exit 1 if any fails")
    check.add_argument("name", nargs="?", help="one storage (default: all)")

    retention = commands.add_parser(
        "retention", help="delete recordings older than their retention (docs/retention.md)")\
        .add_subparsers(dest="retention_command", required=True, metavar="ACTION")
    run = retention.add_parser(
        "run", help="sweep once now, as the background task does; exit 1 if any delete failed")
    run.add_argument("--dry-run", action="store_true",
                     help="only list what would be deleted; change nothing")
    run.add_argument("--json", action="store_true", help="print the result as JSON")

    holds = commands.add_parser(
        "recordings", help="list and show recordings (over HTTP); put them on legal hold, "
                           "or release them (this host's catalog)")\
        .add_subparsers(dest="recordings_command", required=True, metavar="ACTION")
    for action, text in (("hold", "keep a recording from every delete, retention included"),
                         ("release", "release a recording from legal hold")):
        holds.add_parser(action, help=text).add_argument("recording_id", type=positive_id)

    commands.add_parser("demo", help="create a demo user, key and recording, print URLs")
    db = commands.add_parser("db", help="the catalog's database schema")\
        .add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db.add_parser("upgrade", help="apply the schema migrations this version ships; safe to "
                                  "run again, and from several hosts at once")
    add_client_commands(commands, holds)
    return parser


# Flags of `serve` that override a variable; they go through the same validation.
_SERVE_FLAGS = {"host": "GATEWAY_HOST", "port": "GATEWAY_PORT", "workers": "GATEWAY_WORKERS"}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if is_client_command(args):  # HTTP to a gateway: no data dir, no server settings
        return run_client_command(args, os.environ)
    environ = dict(os.environ)
    if args.command == "serve":
        environ.update({var: str(value) for flag, var in _SERVE_FLAGS.items()
                        if (value := getattr(args, flag)) is not None})
    try:
        settings = load_settings(environ)
        if settings.workers > 1 and settings.port == 0:
            raise SettingsError("GATEWAY_PORT", "port 0 cannot be shared by several workers")
    except SettingsError as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    try:
        return _run_command(args, settings)
    except CatalogUnavailable as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _run_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "serve":
        if settings.catalog == "postgres":
            asyncio.run(_check_catalog(settings))
        if args.demo:
            print(describe(asyncio.run(create_demo(settings)), _base_url(settings)), flush=True)
        return serve(settings)
    if args.command == "storage":
        return asyncio.run(_storage_command(settings, args.storage_command,
                                            getattr(args, "name", None)))
    if args.command == "demo":
        print(describe(asyncio.run(create_demo(settings)), _base_url(settings)))
        return EXIT_OK
    if args.command == "db":
        if settings.sidecar:
            print(STANDALONE_ONLY.format(what="the catalog database"), file=sys.stderr)
            return EXIT_USAGE
        print(asyncio.run(_db_upgrade(settings)))
        return EXIT_OK
    if args.command == "retention":
        return _retention_run(settings, dry_run=args.dry_run, as_json=args.json)
    if args.command == "recordings":
        return _legal_hold_command(settings, args.recording_id,
                                   args.recordings_command == "hold")
    if args.keys_command == "create":
        principal = Principal(args.user_id, args.tenant, Role(args.role))
        key = asyncio.run(_create_key(settings, principal))
        print(f"Created a {principal.role} key for user {principal.user_id} "
              f"in tenant {principal.tenant!r}. It is shown only once:")
        print(key)
        return EXIT_OK
    if args.keys_command == "list":
        asyncio.run(_list_keys(settings))
        return EXIT_OK
    if asyncio.run(_revoke_key(settings, args.prefix)):
        print(f"Revoked {args.prefix}")
        return EXIT_OK
    print(f"gateway: no active key with prefix {args.prefix!r}", file=sys.stderr)
    return EXIT_FAILURE
