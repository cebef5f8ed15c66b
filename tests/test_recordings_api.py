"""The recordings API as a client sees it: shapes, pagination, ownership, lifecycle."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.models import MAX_ID, new_id
from tests.conftest import Gateway, both_catalogs, local_only
from tests.storage_probe import LocalProbe

# Vexa's shape, plus the gateway's own `legal_hold` (docs/retention.md).
RECORDING_KEYS = {"id", "meeting_id", "user_id", "session_uid", "source", "status",
                  "error_message", "created_at", "completed_at", "media_files", "legal_hold"}
MEDIA_KEYS = {"id", "type", "format", "storage_backend", "file_size_bytes", "duration_seconds",
              "metadata", "created_at"}

pytestmark = both_catalogs


async def get_json(gw: Gateway, path: str, who: str = "alice") -> tuple[int, Any]:
    async with gw.client.get(path, headers=gw.h(who)) as resp:
        return resp.status, await resp.json()


async def test_create_upload_complete_shapes(gw: Gateway, wav_bytes: bytes) -> None:
    recording = await gw.create_recording(
        meeting_id=16, platform="google_meet", native_meeting_id="abc-defg-hij",
        session_uid="d6e337d6-92cd-452f-b003-23c5498091ef",
    )
    assert set(recording) == RECORDING_KEYS
    assert recording["status"] == "in_progress"
    assert recording["user_id"] == 1 and recording["source"] == "bot"
    assert recording["completed_at"] is None and recording["media_files"] == []
    assert 10**11 < recording["id"] < 2**53

    media = await gw.upload(recording["id"], wav_bytes)
    assert set(media) == MEDIA_KEYS
    assert media["file_size_bytes"] == len(wav_bytes)
    assert media["duration_seconds"] == 4.0
    assert media["metadata"]["sample_rate"] == 8000
    assert media["storage_backend"] == gw.backend

    async with gw.client.post(f"/recordings/{recording['id']}/complete", headers=gw.h()) as resp:
        assert resp.status == 200
        done = await resp.json()
    assert done["status"] == "completed" and done["completed_at"] is not None
    status, fetched = await get_json(gw, f"/recordings/{recording['id']}")
    assert status == 200 and fetched == done
    assert "storage" not in str(fetched).replace("storage_backend", "")  # no paths or keys


async def test_completed_recording_takes_no_more_media(gw: Gateway, wav_bytes: bytes) -> None:
    recording = await gw.create_recording()
    async with gw.client.post(f"/recordings/{recording['id']}/complete", headers=gw.h(),
                              json={"status": "failed", "error_message": "bot crashed"}) as r:
        body = await r.json()
        assert body["status"] == "failed" and body["error_message"] == "bot crashed"
    async with gw.client.post(f"/recordings/{recording['id']}/complete", headers=gw.h()) as r:
        assert r.status == 409
    async with gw.client.post(f"/recordings/{recording['id']}/media?format=wav",
                              data=wav_bytes, headers=gw.h()) as r:
        assert r.status == 409


def test_ids_made_in_one_millisecond_keep_their_order() -> None:
    ids = [new_id() for _ in range(10_000)]  # many share a millisecond
    assert ids == sorted(set(ids))
    assert ids[0] > 0 and ids[-1] <= MAX_ID


async def test_list_is_newest_first_and_paginates(gw: Gateway) -> None:
    ids = [(await gw.create_recording(meeting_id=i % 2))["id"] for i in range(5)]
    status, page = await get_json(gw, "/recordings")
    assert status == 200
    assert [r["id"] for r in page["recordings"]] == ids[::-1]
    _, page = await get_json(gw, "/recordings?limit=2&offset=1")
    assert [r["id"] for r in page["recordings"]] == ids[::-1][1:3]
    _, page = await get_json(gw, "/recordings?meeting_id=1")
    assert [r["id"] for r in page["recordings"]] == [ids[3], ids[1]]
    _, page = await get_json(gw, "/recordings?offset=10")
    assert page == {"recordings": []}


@pytest.mark.parametrize(("query", "detail"), [
    ("limit=0", "Query parameter 'limit' must be from 1 to 200, got 0"),
    ("limit=201", "Query parameter 'limit' must be from 1 to 200, got 201"),
    ("limit=abc", "Query parameter 'limit' must be an integer, got 'abc'"),
    ("limit=1.5", "Query parameter 'limit' must be an integer, got '1.5'"),
    ("offset=-1", "Query parameter 'offset' must be at least 0, got -1"),
    ("meeting_id=x", "Query parameter 'meeting_id' must be an integer, got 'x'"),
    ("limit=1&limit=2", "Query parameter 'limit' is given more than once"),
    ("limit=" + "9" * 40, "Query parameter 'limit' must be an integer, got '" + "9" * 40 + "'"),
])
async def test_bad_list_parameters_are_422(gw: Gateway, query: str, detail: str) -> None:
    status, body = await get_json(gw, f"/recordings?{query}")
    assert status == 422
    assert body == {"detail": detail}


async def test_users_see_only_their_own(gw: Gateway, wav_bytes: bytes) -> None:
    rid, mid = await gw.recording_with_media(wav_bytes, who="bob")
    not_found = {"detail": "Recording not found"}
    assert await get_json(gw, f"/recordings/{rid}", who="alice") == (404, not_found)
    assert await get_json(gw, f"/recordings/{rid}", who="mallory") == (404, not_found)
    _, alice_list = await get_json(gw, "/recordings", who="alice")
    assert rid not in [r["id"] for r in alice_list["recordings"]]
    for path in (gw.raw_path(rid, mid), f"/recordings/{rid}/media/{mid}/download"):
        status, _ = await get_json(gw, path, who="alice")
        assert status == 404
    async with gw.client.delete(f"/recordings/{rid}", headers=gw.h("alice")) as resp:
        assert resp.status == 404
    async with gw.client.post(f"/recordings/{rid}/complete", headers=gw.h("alice")) as resp:
        assert resp.status == 404
    async with gw.client.post(f"/recordings/{rid}/media?format=mp3", data=b"x",
                              headers=gw.h("alice")) as resp:
        assert resp.status == 404
    # Nothing changed for bob.
    status, still = await get_json(gw, f"/recordings/{rid}", who="bob")
    assert status == 200 and len(still["media_files"]) == 1
    async with gw.client.get(gw.raw_path(rid, mid), headers=gw.h("bob")) as resp:
        assert await resp.read() == wav_bytes


async def test_admin_sees_the_whole_tenant_only(gw: Gateway) -> None:
    rid = (await gw.create_recording(who="bob"))["id"]
    assert (await get_json(gw, f"/recordings/{rid}", who="admin"))[0] == 200
    _, listing = await get_json(gw, "/recordings", who="admin")
    assert rid in [r["id"] for r in listing["recordings"]]
    _, other = await get_json(gw, "/recordings", who="mallory")  # admin of another tenant
    assert other == {"recordings": []}


async def test_delete_removes_bytes_then_metadata(gw: Gateway, wav_bytes: bytes) -> None:
    rid, mid = await gw.recording_with_media(wav_bytes)
    assert len(gw.probe.objects()) == 1
    async with gw.client.delete(f"/recordings/{rid}", headers=gw.h()) as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "deleted", "recording_id": rid}
    assert gw.probe.objects() == []
    assert (await get_json(gw, f"/recordings/{rid}"))[0] == 404
    async with gw.client.get(gw.raw_path(rid, mid), headers=gw.h()) as resp:
        assert resp.status == 404
    async with gw.client.delete(f"/recordings/{rid}", headers=gw.h()) as resp:
        assert resp.status == 404


async def test_delete_when_the_file_is_already_gone(gw: Gateway, wav_bytes: bytes) -> None:
    rid, _ = await gw.recording_with_media(wav_bytes)
    gw.probe.remove_all()
    async with gw.client.delete(f"/recordings/{rid}", headers=gw.h()) as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "deleted", "recording_id": rid}


@local_only
async def test_delete_an_object_cannot_be_removed_is_reported_not_a_500(
    gw: Gateway, wav_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    rid, mid = await gw.recording_with_media(wav_bytes)
    (key,) = gw.probe.objects()
    assert isinstance(gw.probe, LocalProbe)
    path = gw.probe.root / key
    path.unlink()
    path.mkdir()  # unlink(2) of a directory fails: EISDIR
    (path / "inside").write_bytes(b"x")
    async with gw.client.delete(f"/recordings/{rid}", headers=gw.h()) as resp:
        assert resp.status == 200
        assert await resp.json() == {
            "status": "deleted", "recording_id": rid,
            "storage_errors": [{"media_file_id": mid, "detail":
                                "Local storage could not delete the file (Is a directory)"}]}
    assert (await get_json(gw, f"/recordings/{rid}"))[0] == 404  # best effort, as in Vexa
    assert any(key in record.getMessage() for record in caplog.records
               if record.levelname == "ERROR")  # where the leftover is, for cleanup


async def test_meeting_recordings(gw: Gateway) -> None:
    rid = (await gw.create_recording(platform="teams", native_meeting_id="9876"))["id"]
    status, body = await get_json(gw, "/transcripts/teams/9876")
    assert status == 200
    assert body["platform"] == "teams" and body["native_meeting_id"] == "9876"
    assert [r["id"] for r in body["recordings"]] == [rid]
    assert (await get_json(gw, "/transcripts/teams/9876", who="bob"))[0] == 404
    assert (await get_json(gw, "/transcripts/teams/0000"))[0] == 404


@pytest.mark.parametrize(("body", "detail_start"), [
    ({"session_uid": "../../etc"}, "Field 'session_uid' must be a string matching"),
    ({"session_uid": "a/b"}, "Field 'session_uid'"),
    ({"session_uid": 5}, "Field 'session_uid'"),
    ({"meeting_id": "16"}, "Field 'meeting_id' must be a non-negative integer"),
    ({"meeting_id": -1}, "Field 'meeting_id'"),
    ({"meeting_id": True}, "Field 'meeting_id'"),
    ({"platform": "Google Meet"}, "Field 'platform'"),
    ({"native_meeting_id": "a b"}, "Field 'native_meeting_id'"),
    ({"source": "x" * 40}, "Field 'source'"),
    ({"storage": "elsewhere"}, "Unknown storage 'elsewhere'"),
])
async def test_bad_recording_fields_are_422(
    gw: Gateway, body: dict[str, Any], detail_start: str
) -> None:
    async with gw.client.post("/recordings", json=body, headers=gw.h()) as resp:
        assert resp.status == 422
        assert (await resp.json())["detail"].startswith(detail_start)


async def test_malformed_json_is_400(gw: Gateway) -> None:
    for data in (b"{", b"\xff\xfe", b"[1, 2]"):
        async with gw.client.post("/recordings", data=data, headers={
            **gw.h(), "Content-Type": "application/json"}) as resp:
            assert resp.status in (400, 422)
            assert set(await resp.json()) == {"detail"}


async def test_unknown_routes_and_methods_answer_json(gw: Gateway) -> None:
    for method, path, status in (("GET", "/nope", 404), ("GET", "/recordings/abc", 404),
                                 ("PUT", "/recordings", 405),
                                 ("GET", "/recordings/" + "1" * 30, 404)):
        async with gw.client.request(method, path, headers=gw.h()) as resp:
            assert resp.status == status
            assert resp.content_type == "application/json"
            assert set(await resp.json()) == {"detail"}


async def test_x_tenant_must_match_the_credential(gw: Gateway, wav_bytes: bytes) -> None:
    rid, mid = await gw.recording_with_media(wav_bytes)
    for path in ("/recordings", f"/recordings/{rid}", gw.raw_path(rid, mid)):
        async with gw.client.get(path, headers={**gw.h(), "X-Tenant": "default"}) as resp:
            assert resp.status == 200, path
        async with gw.client.get(path, headers={**gw.h(), "X-Tenant": "other"}) as resp:
            assert resp.status == 403, path
            assert await resp.json() == {
                "detail": "X-Tenant names another tenant than the credential's"}
    # mallory's key is of tenant "other": naming it does not open tenant "default".
    async with gw.client.get(f"/recordings/{rid}",
                             headers={**gw.h("mallory"), "X-Tenant": "other"}) as resp:
        assert resp.status == 404
    async with gw.client.get(f"/recordings/{rid}",
                             headers={**gw.h("mallory"), "X-Tenant": "default"}) as resp:
        assert resp.status == 403
