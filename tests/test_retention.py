"""Retention and the audit lock, with a clock the tests control.

Every recording is stamped by the catalog with the injected clock, so a test can
create a recording "twenty days ago" and then let retention sweep "today".
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.appkeys import RECORDINGS, RETENTION
from gateway.audit import DENIED_BY_POLICY, ON_LEGAL_HOLD
from gateway.catalog import SqliteCatalog
from gateway.catalog.factory import open_catalog
from gateway.catalog.sqlite import MIGRATIONS
from gateway.models import UNSCOPED, DeletePolicy, Role
from gateway.recordings import Recordings
from gateway.retention import Retention
from gateway.settings import Settings, SettingsError, load_settings
from gateway.storage.config import TenantConfig
from tests.azurite import write_config
from tests.conftest import (
    AiohttpClient,
    Gateway,
    both_catalogs,
    catalog_env,
    local_only,
    start_gateway,
)
from tests.test_settings_and_cli import run_gateway

pytestmark = both_catalogs
DAY = timedelta(days=1)


@dataclass
class ManualClock:
    """A clock that moves only when the test says; `fail_next` makes one reading fail."""

    now: datetime = field(default_factory=lambda: datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    fail_next: bool = False

    def __call__(self) -> datetime:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the clock broke (on purpose)")
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


TENANTS = (
    TenantConfig("acme", retention_days=30.0),
    TenantConfig("forever", retention_days=0.0),
    TenantConfig("audited", delete_policy=DeletePolicy.DENY),
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def retention_gateway(
    aiohttp_client: AiohttpClient, settings: Settings, clock: ManualClock, **changes: Any
) -> Gateway:
    """A gateway keeping recordings 14 days (acme 30, forever always), `audited` locked."""
    options: dict[str, Any] = {"retention_days": 14.0, "retention_interval": 3600.0,
                               "tenants": TENANTS, **changes}
    gw = await start_gateway(aiohttp_client, settings.with_changes(**options), clock=clock)
    await gw.add_key("acme", 10, Role.RECORDER, tenant="acme")
    await gw.add_key("keeper", 11, Role.RECORDER, tenant="forever")
    await gw.add_key("auditor", 12, Role.RECORDER, tenant="audited")
    await gw.add_key("audit-admin", 13, Role.ADMIN, tenant="audited")
    return gw


@pytest.fixture
async def rgw(aiohttp_client: AiohttpClient, settings: Settings, clock: ManualClock) -> Gateway:
    return await retention_gateway(aiohttp_client, settings, clock)


async def status_of(gw: Gateway, recording_id: int, who: str = "admin") -> int:
    async with gw.client.get(f"/recordings/{recording_id}", headers=gw.h(who)) as resp:
        return resp.status


async def plays(gw: Gateway, recording_id: int, media_id: int, who: str) -> bytes:
    """The bytes a player gets from /raw (asserting 200)."""
    async with gw.client.get(gw.raw_path(recording_id, media_id), headers=gw.h(who)) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


async def hold(gw: Gateway, recording_id: int, *, on: bool = True,
               who: str = "admin") -> tuple[int, Any]:
    method = gw.client.put if on else gw.client.delete
    async with method(f"/recordings/{recording_id}/legal-hold", headers=gw.h(who)) as resp:
        return resp.status, await resp.json()


async def delete(gw: Gateway, recording_id: int, who: str) -> tuple[int, Any]:
    async with gw.client.delete(f"/recordings/{recording_id}", headers=gw.h(who)) as resp:
        return resp.status, await resp.json()


# --- retention ---------------------------------------------------------------------


async def test_expired_recordings_go_from_storage_and_catalog(
    rgw: Gateway, clock: ManualClock, wav_bytes: bytes
) -> None:
    old, old_media = await rgw.recording_with_media(wav_bytes, who="alice")
    async with rgw.client.post(f"/recordings/{old}/complete", headers=rgw.h()) as resp:
        assert resp.status == 200
    abandoned = (await rgw.create_recording("bob"))["id"]  # a bot that died: in_progress
    clock.advance(10 * DAY)
    recent, recent_media = await rgw.recording_with_media(wav_bytes, who="bob")
    assert len(rgw.probe.objects()) == 2
    clock.advance(5 * DAY)  # old and abandoned are 15 days old, recent 5

    report = await rgw.app[RETENTION].sweep()

    assert sorted(r.id for r in report.removed) == sorted([old, abandoned])
    assert report.failed == [] and report.removed_bytes == len(wav_bytes)
    assert [key.split("/")[2] for key in rgw.probe.objects()] == [str(recent)]
    assert await status_of(rgw, old) == 404 and await status_of(rgw, abandoned) == 404
    async with rgw.client.get(rgw.raw_path(old, old_media), headers=rgw.h("alice")) as resp:
        assert resp.status == 404
    assert await plays(rgw, recent, recent_media, "bob") == wav_bytes
    assert (await rgw.app[RETENTION].sweep()).removed == []  # nothing left to do


async def test_dry_run_changes_nothing(
    rgw: Gateway, clock: ManualClock, wav_bytes: bytes
) -> None:
    rid, mid = await rgw.recording_with_media(wav_bytes)
    before = rgw.probe.objects()
    clock.advance(15 * DAY)

    report = await rgw.app[RETENTION].sweep(dry_run=True)

    assert [r.id for r in report.removed] == [rid] and report.dry_run
    assert report.summary() == f"retention would delete 1 recording ({len(wav_bytes)} bytes)"
    assert rgw.probe.objects() == before
    assert await plays(rgw, rid, mid, "alice") == wav_bytes


async def test_held_recordings_are_kept_until_released(
    rgw: Gateway, clock: ManualClock, wav_bytes: bytes
) -> None:
    held, held_media = await rgw.recording_with_media(wav_bytes)
    other, _ = await rgw.recording_with_media(wav_bytes)
    status, body = await hold(rgw, held)
    assert status == 200 and body["legal_hold"] is True and body["id"] == held
    clock.advance(100 * DAY)

    report = await rgw.app[RETENTION].sweep()

    assert [r.id for r in report.removed] == [other]
    assert await plays(rgw, held, held_media, "alice") == wav_bytes
    assert len(rgw.probe.objects()) == 1
    assert (await hold(rgw, held, on=False))[1]["legal_hold"] is False
    assert [r.id for r in (await rgw.app[RETENTION].sweep()).removed] == [held]
    assert rgw.probe.objects() == []


async def test_tenant_retention_overrides_the_global_one(
    rgw: Gateway, clock: ManualClock, wav_bytes: bytes
) -> None:
    default, _ = await rgw.recording_with_media(wav_bytes, who="alice")  # 14 days
    acme, _ = await rgw.recording_with_media(wav_bytes, who="acme")  # 30 days
    kept, kept_media = await rgw.recording_with_media(wav_bytes, who="keeper")  # forever
    retention = rgw.app[RETENTION]

    clock.advance(20 * DAY)
    assert [r.id for r in (await retention.sweep()).removed] == [default]
    clock.advance(11 * DAY)
    assert [(r.id, r.tenant) for r in (await retention.sweep()).removed] == [(acme, "acme")]
    clock.advance(3650 * DAY)
    assert (await retention.sweep()).removed == []
    assert await plays(rgw, kept, kept_media, "keeper") == wav_bytes
    assert await status_of(rgw, acme, who="acme") == 404


async def test_sweeps_in_batches_until_none_is_left(
    aiohttp_client: AiohttpClient, settings: Settings, clock: ManualClock, wav_bytes: bytes
) -> None:
    gw = await retention_gateway(aiohttp_client, settings, clock, retention_batch=2)
    made = [(await gw.recording_with_media(wav_bytes))[0] for _ in range(5)]
    clock.advance(15 * DAY)
    report = await gw.app[RETENTION].sweep()
    assert sorted(r.id for r in report.removed) == sorted(made)
    assert gw.probe.objects() == []


async def test_two_workers_sweeping_at_once_delete_each_recording_once(
    rgw: Gateway, clock: ManualClock, wav_bytes: bytes
) -> None:
    made = {(await rgw.recording_with_media(wav_bytes))[0] for _ in range(6)}
    clock.advance(15 * DAY)
    first = rgw.app[RETENTION]
    # A second worker (or replica): its own connections to the same catalog, the same
    # storages.
    catalog = await open_catalog(rgw.settings, clock=clock)
    try:
        recordings = Recordings(catalog, rgw.app[RECORDINGS].storages, cache_ttl=0)
        second = Retention(catalog, recordings, first.rules, batch=2, clock=clock)
        reports = await asyncio.gather(first.sweep(), second.sweep())
    finally:
        await catalog.close()
    removed = [r.id for report in reports for r in report.removed]
    assert sorted(removed) == sorted(made)  # each one reported once, by one worker
    assert all(report.failed == [] for report in reports)
    assert rgw.probe.objects() == []


# On S3 a delete of a missing object or bucket succeeds, so only a local file can be
# made to refuse its delete (a directory in its place).
@local_only
async def test_a_recording_whose_bytes_cannot_go_stays_for_the_next_sweep(
    rgw: Gateway, clock: ManualClock, wav_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    rid, _ = await rgw.recording_with_media(wav_bytes)
    clock.advance(15 * DAY)
    path = rgw.settings.local_storage_dir / rgw.probe.objects()[0]
    path.unlink()
    path.mkdir()  # unlink() of a directory fails
    with caplog.at_level(logging.ERROR, logger="gateway"):
        report = await rgw.app[RETENTION].sweep()
    assert report.removed == [] and [r.id for r in report.failed] == [rid]
    assert await status_of(rgw, rid) == 200  # the catalog still knows it: it will be retried
    assert any(str(rid) in record.getMessage() for record in caplog.records)
    path.rmdir()
    assert [r.id for r in (await rgw.app[RETENTION].sweep()).removed] == [rid]
    assert await status_of(rgw, rid) == 404


async def test_the_background_task_sweeps_and_survives_an_error(
    aiohttp_client: AiohttpClient, settings: Settings, clock: ManualClock, wav_bytes: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.retention")
    gw = await retention_gateway(aiohttp_client, settings, clock, retention_interval=0.05)
    rid, _ = await gw.recording_with_media(wav_bytes)
    kept, _ = await gw.recording_with_media(wav_bytes, who="keeper")
    clock.advance(15 * DAY)
    clock.fail_next = True  # the next sweep fails; the one after must still run
    for _ in range(200):
        if await status_of(gw, rid) == 404:
            break
        await asyncio.sleep(0.05)
    assert await status_of(gw, rid) == 404
    messages = [record.getMessage() for record in caplog.records]
    assert "retention sweep failed; retrying in 0.05 seconds" in messages
    assert any(m.startswith(f"retention: deleted recording {rid} (tenant default, user 1, ")
               for m in messages)
    assert "retention deleted 1 recording" in "\n".join(messages)
    assert await status_of(gw, kept, who="keeper") == 200
    assert len(gw.probe.objects()) == 1


# --- the audit lock ------------------------------------------------------------------


async def test_delete_under_deny_policy_is_409_and_the_file_still_plays(
    rgw: Gateway, clock: ManualClock, wav_bytes: bytes
) -> None:
    rid, mid = await rgw.recording_with_media(wav_bytes, who="auditor")
    before = rgw.probe.objects()
    for who in ("auditor", "audit-admin"):  # the owner, and the tenant's admin alike
        assert await delete(rgw, rid, who) == (409, {"detail": DENIED_BY_POLICY})
    assert rgw.probe.objects() == before
    assert await plays(rgw, rid, mid, "auditor") == wav_bytes
    # Retention is the plan's own rule: it still applies to the audited tenant.
    clock.advance(15 * DAY)
    assert [r.id for r in (await rgw.app[RETENTION].sweep()).removed] == [rid]
    assert rgw.probe.objects() == []


async def test_delete_of_a_held_recording_is_409_and_the_file_still_plays(
    rgw: Gateway, wav_bytes: bytes
) -> None:
    rid, mid = await rgw.recording_with_media(wav_bytes)
    assert (await hold(rgw, rid))[0] == 200
    assert await delete(rgw, rid, "alice") == (409, {"detail": ON_LEGAL_HOLD})
    assert await delete(rgw, rid, "admin") == (409, {"detail": ON_LEGAL_HOLD})
    assert len(rgw.probe.objects()) == 1
    assert await plays(rgw, rid, mid, "alice") == wav_bytes
    assert (await hold(rgw, rid, on=False))[0] == 200
    assert await delete(rgw, rid, "alice") == (200, {"status": "deleted", "recording_id": rid})
    assert rgw.probe.objects() == []


async def test_only_an_admin_of_the_tenant_sets_or_releases_a_hold(rgw: Gateway) -> None:
    rid = (await rgw.create_recording("alice"))["id"]
    # Other roles are refused before any lookup: the 403 says nothing about the recording.
    for who in ("alice", "viewer"):
        assert await hold(rgw, rid, who=who) == (403, {"detail": "This action needs the "
                                                                 "admin role"})
        assert (await hold(rgw, rid, on=False, who=who))[0] == 403
    assert (await hold(rgw, 12345, who="alice"))[0] == 403
    assert await hold(rgw, rid, who="mallory") == (404, {"detail": "Recording not found"})
    assert (await hold(rgw, 12345))[0] == 404
    async with rgw.client.put(f"/recordings/{rid}/legal-hold") as resp:
        assert resp.status == 401
    async with rgw.client.get(f"/recordings/{rid}", headers=rgw.h()) as resp:
        assert (await resp.json())["legal_hold"] is False

    for _ in range(2):  # idempotent
        status, body = await hold(rgw, rid)
        assert status == 200 and body["legal_hold"] is True
    async with rgw.client.get("/recordings", headers=rgw.h("alice")) as resp:
        assert [r["legal_hold"] for r in (await resp.json())["recordings"]] == [True]
    status, body = await hold(rgw, rid, on=False)
    assert status == 200 and body["legal_hold"] is False


# --- the command ---------------------------------------------------------------------


def cli_env(gw: Gateway, **extra: str) -> dict[str, str]:
    """The environment of an operator's shell next to this gateway."""
    env = {"GATEWAY_DATA_DIR": str(gw.settings.data_dir), "LOCAL_STORAGE_FSYNC": "false",
           **catalog_env(gw.settings), **extra}
    if gw.backend == "s3":
        env.update(STORAGE_BACKEND="s3", S3_ENDPOINT=gw.settings.s3_endpoint,
                   S3_BUCKET=gw.settings.s3_bucket, AWS_ACCESS_KEY_ID="testing",
                   AWS_SECRET_ACCESS_KEY="testing")
    if gw.backend == "gcs":
        env.update(STORAGE_BACKEND="gcs", GCS_ENDPOINT=gw.settings.gcs_endpoint,
                   GCS_BUCKET=gw.settings.gcs_bucket,
                   GCS_CREDENTIALS=gw.settings.gcs_credentials)
    if gw.backend == "azure":
        env["GATEWAY_CONFIG"] = str(write_config(gw.settings.data_dir / "gateway.toml",
                                                 gw.settings))
    return env


async def gateway_command(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    result = await asyncio.to_thread(run_gateway, *args, env=env)
    return result.returncode, result.stdout, result.stderr


async def test_command_dry_run_then_run(
    aiohttp_client: AiohttpClient, settings: Settings, wav_bytes: bytes
) -> None:
    # The command runs on the real clock: these recordings are made 20 and 1 days ago.
    clock = ManualClock(datetime.now(UTC) - 20 * DAY)
    gw = await retention_gateway(aiohttp_client, settings, clock)
    old, _ = await gw.recording_with_media(wav_bytes, who="alice")
    held, held_media = await gw.recording_with_media(wav_bytes, who="bob")
    assert (await hold(gw, held))[0] == 200
    clock.advance(19 * DAY)
    recent, _ = await gw.recording_with_media(wav_bytes, who="alice")
    env = cli_env(gw, GATEWAY_RETENTION_DAYS="14")
    before = gw.probe.objects()

    code, out, err = await gateway_command("retention", "run", "--dry-run", env=env)
    assert code == 0, err
    lines = out.splitlines()
    async with gw.client.get(f"/recordings/{old}", headers=gw.h()) as resp:
        created_at = (await resp.json())["created_at"]
    assert lines[1].split() == ["would", "delete", str(old), "default", "1", created_at,
                                "in_progress", str(len(wav_bytes))]
    assert lines[-1] == f"Retention would delete 1 recording ({len(wav_bytes)} bytes)."
    assert len(lines) == 3
    code, out, err = await gateway_command("retention", "run", "--dry-run", "--json", env=env)
    assert code == 0, err
    answer = json.loads(out)
    assert answer["dry_run"] is True and [r["id"] for r in answer["recordings"]] == [old]
    assert gw.probe.objects() == before and await status_of(gw, old) == 200

    code, out, err = await gateway_command("retention", "run", env=env)
    assert code == 0, err
    assert out.splitlines()[1].split()[:3] == ["deleted", str(old), "default"]
    assert out.splitlines()[-1] == f"Retention deleted 1 recording ({len(wav_bytes)} bytes)."
    assert await status_of(gw, old) == 404 and await status_of(gw, recent) == 200
    assert len(gw.probe.objects()) == 2
    assert await plays(gw, held, held_media, "bob") == wav_bytes

    code, out, _ = await gateway_command("recordings", "release", str(held), env=env)
    assert (code, out) == (0, f"Recording {held} is released from legal hold\n")
    code, out, err = await gateway_command("retention", "run", "--json", env=env)
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)["recordings"]] == [held]
    assert await status_of(gw, held) == 404 and len(gw.probe.objects()) == 1

    code, out, _ = await gateway_command("recordings", "hold", str(recent), env=env)
    assert (code, out) == (0, f"Recording {recent} is on legal hold\n")
    async with gw.client.get(f"/recordings/{recent}", headers=gw.h()) as resp:
        assert (await resp.json())["legal_hold"] is True
    code, _, err = await gateway_command("recordings", "hold", "424242", env=env)
    assert (code, err) == (1, "gateway: no recording 424242\n")


async def test_command_without_retention_says_so(tmp_path: Path) -> None:
    code, out, err = await gateway_command("retention", "run",
                                           env={"GATEWAY_DATA_DIR": str(tmp_path)})
    assert code == 0, err
    assert out == ("Retention is off: GATEWAY_RETENTION_DAYS is 0 and no tenant sets "
                   "retention_days; nothing to delete.\n")


# --- settings and the catalog --------------------------------------------------------


def _write_config(tmp_path: Path, tenant_table: str) -> dict[str, str]:
    config = tmp_path / "gateway.toml"
    config.write_text(f"[tenants.voki]\n{tenant_table}\n")
    return {"GATEWAY_DATA_DIR": str(tmp_path / "data"), "GATEWAY_CONFIG": str(config)}


def test_tenant_keys_from_the_config_file(tmp_path: Path) -> None:
    settings = load_settings({**_write_config(tmp_path, 'retention_days = 90\n'
                                                        'delete_policy = "deny"'),
                              "GATEWAY_RETENTION_DAYS": "14.5"})
    assert settings.retention_days == 14.5
    assert settings.tenant("voki") == TenantConfig("voki", None, 90.0, DeletePolicy.DENY)
    assert settings.tenant("other") == TenantConfig("other")


@pytest.mark.parametrize(("table", "message"), [
    ('delete_policy = "never"',
     "tenants.voki.delete_policy: must be one of allow, deny, got 'never'"),
    ("retention_days = -3",
     "tenants.voki.retention_days: must be a number of days from 0 (keep forever) to 36500, "
     "got -3"),
    ('retention_days = "14"',
     "tenants.voki.retention_days: must be a number of days from 0 (keep forever) to 36500, "
     "got '14'"),
    ("retention = 14", "tenants.voki: unknown key(s) retention"),
])
def test_wrong_tenant_keys_are_named(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(_write_config(tmp_path, table))
    assert str(caught.value) == f"GATEWAY_CONFIG: gateway.toml: {message}"


@pytest.mark.parametrize(("env", "message"), [
    ({"GATEWAY_RETENTION_DAYS": "two weeks"},
     "GATEWAY_RETENTION_DAYS: must be a number from 0 to 36500, got 'two weeks'"),
    ({"GATEWAY_RETENTION_INTERVAL": "0"},
     "GATEWAY_RETENTION_INTERVAL: must be a number from 1 to 604800, got '0'"),
    ({"GATEWAY_RETENTION_BATCH": "0"},
     "GATEWAY_RETENTION_BATCH: must be an integer from 1 to 10000, got '0'"),
    ({"GATEWAY_RETENTION_DAYS": "14", "GATEWAY_CATALOG": "upstream",
      "GATEWAY_UPSTREAM_URL": "http://meeting-api:8080"},
     "GATEWAY_RETENTION_DAYS: in sidecar mode the upstream meeting API owns its recordings' "
     "lifetime; unset it"),
])
def test_wrong_retention_settings_are_named(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"GATEWAY_DATA_DIR": str(tmp_path), **env})
    assert str(caught.value) == message


def test_a_sidecar_refuses_the_audit_lock(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^GATEWAY_CONFIG: tenants.voki: retention_days "
                                            r"and delete_policy are standalone settings"):
        load_settings({**_write_config(tmp_path, 'delete_policy = "deny"'),
                       "GATEWAY_CATALOG": "upstream",
                       "GATEWAY_UPSTREAM_URL": "http://meeting-api:8080"})


async def test_a_catalog_from_before_legal_holds_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
    db.execute("INSERT INTO recordings (id, tenant, user_id, session_uid, source, status,"
               " storage_name, created_at) VALUES (7, 'default', 1, 's', 'bot',"
               " 'completed', 'default', '2025-01-01T00:00:00Z')")
    db.commit()
    db.close()
    catalog = await SqliteCatalog.open(path)
    try:
        recording = await catalog.get_recording(7, UNSCOPED)
        assert recording is not None and recording.legal_hold is False
        assert (await catalog.set_legal_hold(7, UNSCOPED, True)) is not None
        held = await catalog.get_recording(7, UNSCOPED)
        assert held is not None and held.legal_hold is True
    finally:
        await catalog.close()
