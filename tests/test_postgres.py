"""The PostgreSQL catalog as replicas use it: schema commands, races, shared state.

Everything runs on the session's throwaway cluster (tests/postgres_server.py).
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.catalog import CatalogUnavailable, NewMediaFile, NewRecording
from gateway.catalog.postgres import PostgresCatalog, describe_url
from gateway.errors import ServiceUnavailable
from gateway.models import MAX_ID, UNSCOPED, RecordingStatus
from gateway.settings import Settings, SettingsError, load_settings
from tests.conftest import SIGNING_KEY, AiohttpClient, local_only, start_gateway
from tests.gateway_process import GatewayProcess, free_port, s3_env, wait_until_up
from tests.postgres_server import PASSWORD, PostgresServer
from tests.storage_probe import s3_client
from tests.test_settings_and_cli import _base_env, run_gateway


def pg_env(url: str, **extra: str) -> dict[str, str]:
    return {"GATEWAY_CATALOG": "postgres", "GATEWAY_DATABASE_URL": url,
            "GATEWAY_SIGNING_KEY": SIGNING_KEY.decode(), "LOCAL_STORAGE_FSYNC": "false",
            "GATEWAY_DATABASE_POOL_SIZE": "2", **extra}


def schema_rows(postgres: PostgresServer, url: str) -> str:
    return postgres.psql("SELECT version, name FROM gateway_schema ORDER BY version",
                         database=url.rsplit("/", 1)[1])


async def open_catalog(url: str) -> PostgresCatalog:
    return await PostgresCatalog.open(url, pool_size=2, wait=10, migrate=True)


@pytest.fixture
async def two_catalogs(postgres: PostgresServer) -> AsyncIterator[tuple[PostgresCatalog, ...]]:
    """Two pools on one database, as two replicas hold them."""
    url = postgres.new_database()
    first = await open_catalog(url)
    second = await open_catalog(url)
    yield first, second
    await first.close()
    await second.close()


def new_recording(user_id: int = 1) -> NewRecording:
    return NewRecording("default", user_id, None, None, None, "s", "bot", "default")


def new_media(recording_id: int, fmt: str) -> NewMediaFile:
    return NewMediaFile(recording_id, "audio", fmt, "local", "default",
                        f"recordings/1/{recording_id}/s.{fmt}", 10, None, {})


# --- gateway db upgrade --------------------------------------------------------------


def test_upgrade_twice_is_idempotent(postgres: PostgresServer, tmp_path: Path) -> None:
    url = postgres.new_database()
    env = {"GATEWAY_DATA_DIR": str(tmp_path), **pg_env(url)}
    first = run_gateway("db", "upgrade", env=env)
    assert first.returncode == 0, first.stderr
    where = describe_url(url)
    assert first.stdout == f"Catalog {where} upgraded from schema version 0 to 1\n"
    second = run_gateway("db", "upgrade", env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout == f"Catalog {where} is already at schema version 1\n"
    assert schema_rows(postgres, url) == "1|0001_catalog.sql"


def test_concurrent_upgrades_apply_each_migration_once(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = postgres.new_database()
    env = {**_base_env(), "GATEWAY_DATA_DIR": str(tmp_path), **pg_env(url)}
    runs = [subprocess.Popen([sys.executable, "-m", "gateway", "db", "upgrade"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL) for _ in range(3)]
    results = [(run.wait(timeout=60), *run.communicate()) for run in runs]
    assert [code for code, _, _ in results] == [0, 0, 0], results
    outputs = sorted(out for _, out, _ in results)
    assert sum("upgraded from schema version 0 to 1" in out for out in outputs) == 1, outputs
    assert sum("already at schema version 1" in out for out in outputs) == 2, outputs
    assert schema_rows(postgres, url) == "1|0001_catalog.sql"


def test_upgrade_on_sqlite_reports_its_version_and_a_sidecar_has_none(tmp_path: Path) -> None:
    result = run_gateway("db", "upgrade", env={"GATEWAY_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"SQLite catalog {tmp_path / 'catalog.sqlite3'} is at schema "
                             "version 2\n")
    sidecar = run_gateway("db", "upgrade", env={"GATEWAY_DATA_DIR": str(tmp_path),
                                                "GATEWAY_CATALOG": "upstream",
                                                "GATEWAY_UPSTREAM_URL": "http://127.0.0.1:9"})
    assert sidecar.returncode == 2 and "sidecar mode" in sidecar.stderr


@pytest.mark.parametrize("command", [("db", "upgrade"), ("keys", "list"), ("serve",)])
def test_an_unreachable_database_is_one_line_without_the_password(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://gw:{PASSWORD}@127.0.0.1:{port}/catalog"
    result = run_gateway(*command, env={"GATEWAY_DATA_DIR": str(tmp_path),
                                        "GATEWAY_PORT": str(free_port()), **pg_env(url)})
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"gateway: error: cannot use the catalog database gw@127.0.0.1:{port}/catalog: ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_a_wrong_password_is_named_without_the_password(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = postgres.new_database().replace(PASSWORD, "Not-The-Password-1")
    result = run_gateway("db", "upgrade", env={"GATEWAY_DATA_DIR": str(tmp_path),
                                               **pg_env(url)})
    assert result.returncode == 1
    assert "password authentication failed" in result.stderr
    assert "Not-The-Password-1" not in result.stderr and "Traceback" not in result.stderr


def test_bad_database_settings_name_the_variable(tmp_path: Path) -> None:
    base = {"GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_CATALOG": "postgres"}
    with pytest.raises(SettingsError) as caught:
        load_settings({**base, "GATEWAY_DATABASE_URL": f"mysql://u:{PASSWORD}@h/db"})
    assert str(caught.value) == ("GATEWAY_DATABASE_URL: must be a "
                                 "postgresql://user:password@host:port/dbname URL")
    with pytest.raises(SettingsError) as caught:
        load_settings({**base, "GATEWAY_DATABASE_URL": f"postgresql://u:{PASSWORD}@h:port/db"})
    assert PASSWORD not in str(caught.value)
    with pytest.raises(SettingsError, match=r"^GATEWAY_DATABASE_URL: is required"):
        load_settings(base)
    url = f"postgresql://u:{PASSWORD}@db.example:5432/gw"
    # Replicas must verify each other's links: no key generated on one replica's disk.
    with pytest.raises(SettingsError, match=r"^GATEWAY_SIGNING_KEY: is required when "
                                            r"GATEWAY_CATALOG=postgres"):
        load_settings({**base, "GATEWAY_DATABASE_URL": url})
    assert not (tmp_path / "signing.key").exists()
    settings = load_settings({**base, "GATEWAY_DATABASE_URL": url,
                              "GATEWAY_SIGNING_KEY": SIGNING_KEY.decode()})
    assert PASSWORD not in repr(settings)
    assert describe_url(url) == "u@db.example:5432/gw"


def test_serve_refuses_an_unmigrated_database_naming_the_command(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = postgres.new_database()
    result = run_gateway("serve", env={"GATEWAY_DATA_DIR": str(tmp_path),
                                       "GATEWAY_PORT": str(free_port()), **pg_env(url)})
    assert result.returncode == 1
    assert result.stderr == (
        f"gateway: error: {describe_url(url)}: the catalog database has no gateway schema; "
        "this gateway needs version 1: run `gateway db upgrade` (or start with "
        "GATEWAY_DATABASE_MIGRATE=true)\n")


async def test_a_catalog_that_loses_its_database_answers_503(
    postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = postgres.new_database()
    catalog = await open_catalog(url)
    try:
        await catalog.ping()
        postgres.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                      " WHERE datname = current_database() AND pid <> pg_backend_pid()",
                      database=url.rsplit("/", 1)[1])
        with pytest.raises(ServiceUnavailable):
            await catalog.get_recording(1, UNSCOPED)
        await catalog.ping()  # the pool connects again
    finally:
        await catalog.close()
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(catalog)


@local_only
@pytest.mark.parametrize("catalog", ["postgres"])
async def test_requests_get_503_while_the_database_is_gone_then_recover(
    aiohttp_client: AiohttpClient, settings: Settings, postgres: PostgresServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = await start_gateway(aiohttp_client, settings.with_changes(cache_ttl=0))
    rid = (await gw.create_recording())["id"]
    postgres.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                  " WHERE datname = current_database() AND pid <> pg_backend_pid()",
                  database=settings.database_url.rsplit("/", 1)[1])
    statuses = []
    for _ in range(5):  # each pooled connection fails once, then is made again
        async with gw.client.get(f"/recordings/{rid}", headers=gw.h()) as resp:
            statuses.append(resp.status)
            if resp.status == 503:
                assert await resp.json() == {
                    "detail": "The catalog database is unavailable; retry"}
            if resp.status == 200:
                break
    assert statuses[0] == 503 and statuses[-1] == 200, statuses
    assert PASSWORD not in caplog.text


# --- two replicas --------------------------------------------------------------------


async def test_ids_from_two_pools_never_collide_and_keep_their_order(
    two_catalogs: tuple[PostgresCatalog, ...]
) -> None:
    async def make(catalog: PostgresCatalog) -> list[int]:
        return [(await catalog.create_recording(new_recording())).id for _ in range(40)]

    results = await asyncio.gather(*(make(c) for c in two_catalogs for _ in range(2)))
    ids = [i for made in results for i in made]
    assert len(set(ids)) == len(ids) == 160
    assert all(0 < i <= MAX_ID for i in ids)
    for made in results:  # one caller's ids rise with the time of creation
        assert made == sorted(made)
    media = await asyncio.gather(*(c.add_media_file(new_media(ids[n], "wav"))
                                   for n, c in enumerate(two_catalogs * 10)))
    assert len({m.id for m in media} | set(ids)) == 180


async def test_a_delete_racing_a_complete_leaves_no_media_without_its_recording(
    two_catalogs: tuple[PostgresCatalog, ...], postgres: PostgresServer
) -> None:
    finisher, deleter = two_catalogs
    outcomes: dict[str, int] = {}
    for round_ in range(60):
        recording = await finisher.create_recording(new_recording())

        async def complete(rid: int = recording.id) -> str:
            try:
                for fmt in ("wav", "mp3", "webm"):
                    await finisher.add_media_file(new_media(rid, fmt))
            except Exception as exc:  # the recording went meanwhile
                return type(exc).__name__
            done = await finisher.finish_recording(rid, RecordingStatus.COMPLETED, None)
            return "completed" if done is not None else "gone"

        async def delete(rid: int = recording.id, pause: float = 0.001 * (round_ % 7)) -> bool:
            await asyncio.sleep(pause)
            return await deleter.delete_recording(rid, UNSCOPED)

        completed, deleted = await asyncio.gather(complete(), delete())
        outcomes[completed] = outcomes.get(completed, 0) + 1
        assert deleted, "the one delete always finds the recording"
        for catalog in two_catalogs:
            assert await catalog.get_recording(recording.id, UNSCOPED) is None
    database = two_catalogs[0]._url.rsplit("/", 1)[1]
    orphans = postgres.psql("SELECT count(*) FROM media_files m WHERE NOT EXISTS"
                            " (SELECT 1 FROM recordings r WHERE r.id = m.recording_id)",
                            database=database)
    assert orphans == "0"
    assert postgres.psql("SELECT count(*) FROM recordings", database=database) == "0"
    # Both orders happened: otherwise the test raced nothing.
    assert set(outcomes) - {"completed", "gone"} and outcomes.keys() & {"completed", "gone"}, \
        outcomes


async def test_complete_and_delete_through_two_replicas_never_orphan(
    two_catalogs: tuple[PostgresCatalog, ...], postgres: PostgresServer
) -> None:
    """Without the delete: each recording ends with all its media files, completed."""
    first, second = two_catalogs
    made = [await first.create_recording(new_recording()) for _ in range(20)]
    await asyncio.gather(*(c.add_media_file(new_media(r.id, fmt))
                           for r in made for c, fmt in ((first, "wav"), (second, "mp3"))))
    finishes = await asyncio.gather(*(c.finish_recording(r.id, RecordingStatus.COMPLETED, None)
                                      for r in made for c in two_catalogs))
    assert all(f is not None and f.status is RecordingStatus.COMPLETED for f in finishes)
    for recording in made:
        seen = await second.get_recording(recording.id, UNSCOPED)
        assert seen is not None and sorted(m.format for m in seen.media_files) == ["mp3", "wav"]
    deletes = await asyncio.gather(*(c.delete_recording(r.id, UNSCOPED)
                                     for r in made for c in two_catalogs))
    assert sum(deletes) == len(made)  # each one deleted exactly once
    database = first._url.rsplit("/", 1)[1]
    assert postgres.psql("SELECT count(*) FROM media_files", database=database) == "0"


@pytest.fixture
def replicas(postgres: PostgresServer, moto_endpoint: str,
             tmp_path: Path) -> Iterator[tuple[GatewayProcess, GatewayProcess, str]]:
    """Two `gateway serve` on their own ports and data dirs, one database, one bucket."""
    url = postgres.new_database()
    storage, _ = s3_env(moto_endpoint)
    env = {**pg_env(url), **storage}
    upgraded = run_gateway("db", "upgrade", env={"GATEWAY_DATA_DIR": str(tmp_path / "ops"),
                                                 **env})
    assert upgraded.returncode == 0, upgraded.stderr
    first = GatewayProcess.start(tmp_path / "a", env)
    try:
        second = GatewayProcess.start(tmp_path / "b", env)
        try:
            yield first, second, storage["S3_BUCKET"]
        finally:
            assert second.stop() == 0
    finally:
        assert first.stop() == 0


async def test_two_replicas_share_catalog_keys_and_storage(
    replicas: tuple[GatewayProcess, GatewayProcess, str], moto_endpoint: str
) -> None:
    one, other, bucket = replicas
    data = os.urandom(300_000)
    key = one.headers()  # created through the first replica's setup only
    async with aiohttp.ClientSession() as session:
        rid, mid = await one.upload(session, data)
        async with session.post(f"{one.base_url}/recordings/{rid}/complete",
                                headers=key) as resp:
            assert resp.status == 200
        async with session.get(f"{other.base_url}/recordings", headers=key) as resp:
            assert resp.status == 200
            listed = (await resp.json())["recordings"]
        assert [r["id"] for r in listed] == [rid]
        assert listed[0]["status"] == "completed"
        raw = f"/recordings/{rid}/media/{mid}/raw"
        async with session.get(f"{other.base_url}{raw}",
                               headers={**key, "Range": "bytes=1000-70999"}) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes 1000-70999/{len(data)}"
            assert await resp.read() == data[1000:71000]
        # A link signed by one replica is honoured by the other (one signing key).
        async with session.get(f"{one.base_url}/recordings/{rid}/media/{mid}/download",
                               headers=key) as resp:
            link = (await resp.json())["download_url"]
        if link.startswith("/"):
            async with session.get(f"{other.base_url}{link}",
                                   headers={"Range": "bytes=0-9"}) as resp:
                assert resp.status == 206 and await resp.read() == data[:10]
        async with session.delete(f"{other.base_url}/recordings/{rid}", headers=key) as resp:
            assert resp.status in (200, 204), await resp.text()
        for replica in (one, other):
            async with session.get(f"{replica.base_url}/recordings/{rid}",
                                   headers=key) as resp:
                assert resp.status == 404
            async with session.get(f"{replica.base_url}{raw}", headers=key) as resp:
                assert resp.status == 404
            async with session.get(f"{replica.base_url}/recordings", headers=key) as resp:
                assert (await resp.json())["recordings"] == []
    listing = s3_client(moto_endpoint).list_objects_v2(Bucket=bucket)
    assert listing.get("KeyCount", 0) == 0


async def test_uploads_racing_deletes_through_two_replicas_leave_no_orphans(
    replicas: tuple[GatewayProcess, GatewayProcess, str], moto_endpoint: str
) -> None:
    one, other, bucket = replicas
    key = one.headers()
    data = os.urandom(20_000)
    kept: list[int] = []
    async with aiohttp.ClientSession() as session:
        for round_ in range(12):
            async with session.post(f"{one.base_url}/recordings", json={},
                                    headers=key) as resp:
                rid = (await resp.json())["id"]

            async def upload_and_complete(rid: int = rid,
                                          fmt: str = "wav" if round_ % 2 else "mp3") -> int:
                async with session.post(f"{one.base_url}/recordings/{rid}/media",
                                        params={"format": fmt},
                                        data=io.BytesIO(data), headers=key) as resp:
                    if resp.status != 201:
                        return resp.status
                async with session.post(f"{one.base_url}/recordings/{rid}/complete",
                                        headers=key) as resp:
                    return resp.status

            async def delete(rid: int = rid, pause: float = 0.01 * (round_ % 4)) -> int:
                await asyncio.sleep(pause)
                async with session.delete(f"{other.base_url}/recordings/{rid}",
                                          headers=key) as resp:
                    return resp.status

            statuses = await asyncio.gather(upload_and_complete(), delete())
            assert all(s < 500 for s in statuses), statuses
            async with session.get(f"{other.base_url}/recordings/{rid}", headers=key) as resp:
                if resp.status == 200:
                    kept.append(rid)
    # What the catalog knows and what the bucket holds agree: no bytes without a media
    # row, no media row without its bytes.
    listing = s3_client(moto_endpoint).list_objects_v2(Bucket=bucket)
    stored = sorted(o["Key"] for o in listing.get("Contents", []))
    async with aiohttp.ClientSession() as session:
        expected = []
        for rid in kept:
            async with session.get(f"{one.base_url}/recordings/{rid}", headers=key) as resp:
                recording = await resp.json()
            for media in recording["media_files"]:
                expected.append(f"recordings/1/{rid}/{recording['session_uid']}."
                                f"{media['format']}")
    assert stored == sorted(expected)


# --- several workers on one host -----------------------------------------------------


def test_two_workers_on_postgres_serve_and_stop_gracefully(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    port = free_port()
    env = {**_base_env(), "GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_PORT": str(port),
           **pg_env(postgres.new_database(), GATEWAY_DATABASE_MIGRATE="true")}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--workers", "2", "--demo"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(f"{base}/healthz", process, lambda: process.communicate()[1])
        time.sleep(0.5)  # let the second worker bind as well
        assert process.stdout is not None
        lines: list[str] = []
        while not (lines and lines[-1].startswith("Gateway listening")):
            lines.append(process.stdout.readline())
        key = next(line.split("=", 1)[1].strip() for line in lines if "API_KEY=" in line)
        signed = next(line.strip() for line in lines if "signature=" in line)
        for _ in range(20):  # spread over both workers by the kernel
            request = urllib.request.Request(f"{base}/recordings", headers={"X-API-Key": key})
            with urllib.request.urlopen(request, timeout=5) as resp:
                assert resp.status == 200
        request = urllib.request.Request(signed, headers={"Range": "bytes=0-3"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 206 and resp.read() == b"RIFF"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        finally:
            process.kill()
            _, err = process.communicate()
    assert code == 0, err
    assert PASSWORD not in err


def test_key_commands_on_postgres(postgres: PostgresServer, tmp_path: Path) -> None:
    url = postgres.new_database()
    env = {"GATEWAY_DATA_DIR": str(tmp_path), **pg_env(url)}
    assert run_gateway("db", "upgrade", env=env).returncode == 0
    created = run_gateway("keys", "create", "--user-id", "7", "--role", "viewer", env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    listed = run_gateway("keys", "list", env=env)
    assert key[:12] in listed.stdout and "viewer" in listed.stdout and key not in listed.stdout
    dump = postgres.psql("SELECT key_hash || prefix FROM api_keys",
                         database=url.rsplit("/", 1)[1])
    assert key not in dump  # stored hashed
    assert not (tmp_path / "catalog.sqlite3").exists()  # nothing on this host's disk
    assert run_gateway("keys", "revoke", key[:12], env=env).returncode == 0
    again = run_gateway("keys", "revoke", key[:12], env=env)
    assert again.returncode == 1 and "no active key" in again.stderr


async def test_opening_an_unmigrated_database_raises_catalog_unavailable(
    postgres: PostgresServer
) -> None:
    url = postgres.new_database()
    with pytest.raises(CatalogUnavailable, match="run `gateway db upgrade`"):
        await PostgresCatalog.open(url, pool_size=1, wait=10)
