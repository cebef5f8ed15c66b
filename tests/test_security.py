"""Attacks on the gateway, one test each: what an attacker sends and what comes back.

Real gateways on 127.0.0.1, on local disk and on S3 (moto) unless a test says
otherwise. docs/security.md explains each answer; this module is its evidence.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from gateway.access_log import CREDENTIAL_LOGGERS, quiet_credential_loggers
from gateway.auth import UrlSigner
from gateway.links import MediaLocation, signed_raw_url
from gateway.media import content_disposition
from gateway.settings import Settings
from tests.conftest import (
    AZURITE_KEY,
    AiohttpClient,
    Gateway,
    both_catalogs,
    local_only,
    start_gateway,
)
from tests.fake_upstream import FakeMeetingApi
from tests.jwt_support import OTHER_SECRET, bearer, token
from tests.test_sidecar import MEDIA, RECORDING, SESSION, AiohttpServer, start_sidecar

NO_SUCH_ID = 4_242_424_242
MP3 = b"ID3\x04" + bytes(2000)  # any bytes will do for a format without a header check
INJECTED = ("x-injected", "set-cookie")
"""Header names the attacks below try to smuggle into a response."""


async def ask(gw: Gateway, method: str, path: str | URL, who: str | None = "alice",
              **headers: str) -> tuple[int, Any]:
    """(status, JSON body or bytes) of one request as `who` (None: no credentials)."""
    sent = {**(gw.h(who) if who else {}), **headers}
    data = MP3 if method == "POST" and "/media" in str(path) else None
    async with gw.client.request(method, path, headers=sent, data=data) as resp:
        body = await resp.read()
        if body and resp.content_type == "application/json":
            return resp.status, json.loads(body)
        return resp.status, body


def by_id(rid: int, mid: int) -> list[tuple[str, str]]:
    """Every request that names one recording and one of its media files (DELETE last)."""
    media = f"/recordings/{rid}/media/{mid}"
    return [("GET", f"/recordings/{rid}"), ("GET", f"{media}/raw"), ("HEAD", f"{media}/raw"),
            ("GET", f"{media}/download"), ("GET", f"{media}/playback-url"),
            ("POST", f"/recordings/{rid}/media?type=audio&format=mp3"),
            ("POST", f"/recordings/{rid}/complete"), ("DELETE", f"/recordings/{rid}")]


async def answers_by_id(gw: Gateway, who: str, rid: int, mid: int,
                        **headers: str) -> list[tuple[int, Any]]:
    return [await ask(gw, method, path, who, **headers) for method, path in by_id(rid, mid)]


async def state(gw: Gateway, rid: int, mid: int, owner: str) -> tuple[Any, ...]:
    """What the owner sees of a recording, its bytes, and every stored object."""
    return (await ask(gw, "GET", f"/recordings/{rid}", owner),
            await ask(gw, "GET", gw.raw_path(rid, mid), owner), gw.probe.objects())


def files_around(gw: Gateway) -> list[str]:
    """Every file under the test's own directory, which holds the data dir."""
    root = gw.settings.data_dir.parent
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --- Tenants: no query ever crosses them -----------------------------------------------

@both_catalogs
async def test_x_tenant_naming_another_tenant_is_403(gw: Gateway, wav_bytes: bytes) -> None:
    rid, mid = await gw.recording_with_media(wav_bytes)
    before = await state(gw, rid, mid, "alice")
    refused = (403, {"detail": "X-Tenant names another tenant than the credential's"})
    for method, path in [("GET", "/recordings"), ("POST", "/recordings"),
                         *by_id(rid, mid), *by_id(NO_SUCH_ID, NO_SUCH_ID)]:
        expected = (403, b"") if method == "HEAD" else refused
        assert await ask(gw, method, path, "alice", **{"X-Tenant": "other"}) == expected, path
        # The same for every spelling that is not exactly the credential's tenant.
        for tenant in ("Default", "defaul", "défaut", "*"):
            status, _ = await ask(gw, method, path, "alice", **{"X-Tenant": tenant})
            assert status == 403, (path, tenant)
    assert await state(gw, rid, mid, "alice") == before
    assert len((await ask(gw, "GET", "/recordings", "admin"))[1]["recordings"]) == 1


@both_catalogs
async def test_admin_of_another_tenant_sees_nothing_of_this_one(
    gw: Gateway, wav_bytes: bytes
) -> None:
    rid, mid = await gw.recording_with_media(wav_bytes)
    before = await state(gw, rid, mid, "alice")
    assert (await ask(gw, "GET", "/recordings", "mallory"))[1] == {"recordings": []}
    as_mallory = await answers_by_id(gw, "mallory", rid, mid, **{"X-Tenant": "other"})
    # Exactly what an id that exists nowhere gets: no existence oracle.
    assert as_mallory == await answers_by_id(gw, "mallory", NO_SUCH_ID, NO_SUCH_ID)
    assert {status for status, _ in as_mallory} == {404}
    # An admin files recordings for "user 1" of its own tenant, not for alice.
    theirs = await gw.create_recording("mallory", user_id=1)
    assert (await ask(gw, "GET", f"/recordings/{theirs['id']}", "alice"))[0] == 404
    assert await state(gw, rid, mid, "alice") == before


# --- Another user's recording, by id ---------------------------------------------------

@both_catalogs
async def test_user_cannot_read_list_or_search_another_users_recording(
    gw: Gateway, wav_bytes: bytes
) -> None:
    rec = await gw.create_recording("bob", meeting_id=77, platform="teams",
                                    native_meeting_id="bobs-meeting")
    await gw.upload(rec["id"], wav_bytes, who="bob")
    assert (await ask(gw, "GET", f"/recordings/{rec['id']}")) == (
        404, {"detail": "Recording not found"})
    for query in ("", "?meeting_id=77", "?limit=200"):
        assert (await ask(gw, "GET", f"/recordings{query}"))[1] == {"recordings": []}
    assert (await ask(gw, "GET", "/transcripts/teams/bobs-meeting")) == (
        404, {"detail": "Meeting not found"})


@both_catalogs
async def test_user_cannot_touch_another_users_recording_by_id(
    gw: Gateway, wav_bytes: bytes
) -> None:
    """Read, download, link, upload to, complete, delete: each 404, and nothing changes."""
    rid, mid = await gw.recording_with_media(wav_bytes, who="bob")
    before = await state(gw, rid, mid, "bob")
    as_alice = await answers_by_id(gw, "alice", rid, mid)
    assert as_alice == await answers_by_id(gw, "alice", NO_SUCH_ID, NO_SUCH_ID)
    assert [status for status, _ in as_alice] == [404] * len(as_alice)
    assert all(body == b"" or set(body) == {"detail"} for _, body in as_alice)
    after = await state(gw, rid, mid, "bob")
    assert after == before
    assert after[0][1]["status"] == "in_progress" and after[1][1] == wav_bytes


# --- Roles: checked before any lookup, so a 403 tells nothing --------------------------

NEEDS_RECORDER = (403, {"detail": "This action needs the recorder role"})


@both_catalogs
async def test_viewer_cannot_create_a_recording(gw: Gateway) -> None:
    for body in ({}, {"user_id": 3}, {"user_id": 1}):
        async with gw.client.post("/recordings", json=body, headers=gw.h("viewer")) as resp:
            assert (resp.status, await resp.json()) == NEEDS_RECORDER
    assert (await ask(gw, "GET", "/recordings", "admin"))[1] == {"recordings": []}


@both_catalogs
async def test_viewer_cannot_upload_media_even_to_its_own_recording(gw: Gateway) -> None:
    rid = (await gw.create_recording("admin", user_id=3))["id"]  # the viewer's own
    path = f"/recordings/{rid}/media?type=audio&format=mp3"
    assert await ask(gw, "POST", path, "viewer") == NEEDS_RECORDER
    assert gw.probe.objects() == []
    assert (await ask(gw, "GET", f"/recordings/{rid}", "viewer"))[1]["media_files"] == []


@both_catalogs
async def test_viewer_cannot_complete_its_own_recording(gw: Gateway) -> None:
    rid = (await gw.create_recording("admin", user_id=3))["id"]
    assert await ask(gw, "POST", f"/recordings/{rid}/complete", "viewer") == NEEDS_RECORDER
    assert (await ask(gw, "GET", f"/recordings/{rid}", "viewer"))[1]["status"] == "in_progress"


@both_catalogs
async def test_viewer_delete_answers_alike_whether_the_recording_exists(
    gw: Gateway, wav_bytes: bytes
) -> None:
    own = (await gw.create_recording("admin", user_id=3))["id"]
    bobs, _ = await gw.recording_with_media(wav_bytes, who="bob")
    for rid in (own, bobs, NO_SUCH_ID):
        assert await ask(gw, "DELETE", f"/recordings/{rid}", "viewer") == NEEDS_RECORDER
    for rid in (own, bobs):
        assert (await ask(gw, "GET", f"/recordings/{rid}", "admin"))[0] == 200
    assert len(gw.probe.objects()) == 1


@both_catalogs
async def test_only_admins_administer_storage(gw: Gateway) -> None:
    needs_admin = (403, {"detail": "This action needs the admin role"})
    for who in ("viewer", "alice"):
        for method, path in (("GET", "/storage"), ("POST", "/storage/default/check"),
                             ("POST", "/storage/nowhere/check")):
            assert await ask(gw, method, path, who) == needs_admin
    assert (await ask(gw, "POST", "/storage/nowhere/check", "admin"))[0] == 404
    assert gw.probe.objects() == []  # no check object was ever written


# --- Signed links -----------------------------------------------------------------------

OTHER_SIGNER = UrlSigner((b"another-key-that-is-long-enough-to-use-1234",))


@dataclass
class Links:
    """A recording with two media files, and signed links to the first."""

    gw: Gateway
    rid: int
    mid: int
    other_rid: int
    other_mid: int
    urls: dict[str, URL]  # by the route that handed it out


async def signed_links(gw: Gateway, rid: int, mid: int) -> dict[str, URL]:
    """The gateway's own signed links to one media file (/download: on local disk only)."""
    urls = {}
    for route, field in (("playback-url", "playback_url"), ("download", "download_url")):
        _, body = await ask(gw, "GET", f"/recordings/{rid}/media/{mid}/{route}")
        url = URL(body[field])
        if "signature" in url.query:
            urls[route] = url
    return urls


@pytest.fixture
async def links(gw: Gateway, wav_bytes: bytes) -> Links:
    rid, mid = await gw.recording_with_media(wav_bytes)
    other_mid = (await gw.upload(rid, MP3, fmt="mp3"))["id"]
    other_rid, _ = await gw.recording_with_media(wav_bytes)  # alice's too: same user in loc
    return Links(gw, rid, mid, other_rid, other_mid, await signed_links(gw, rid, mid))


def _flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1:]


def _resigned(url: URL, signer: UrlSigner) -> URL:
    """The same link, signed afresh by `signer`."""
    location = MediaLocation.parse(url.query["loc"])
    assert location is not None
    return URL(signed_raw_url(signer, url.path, location, expires_in=60,
                              disposition=url.query["disposition"], by=url.query["by"]))


TAMPERS: dict[str, Any] = {
    "other-recording-in-path": lambda u, k: u.with_path(
        k.gw.raw_path(k.other_rid, k.mid)).with_query(u.query),
    "other-media-in-path": lambda u, k: u.with_path(
        k.gw.raw_path(k.rid, k.other_mid)).with_query(u.query),
    "expires-later": lambda u, k: u.update_query(expires=str(int(u.query["expires"]) + 86400)),
    "expires-earlier": lambda u, k: u.update_query(expires=str(int(u.query["expires"]) - 1)),
    "expires-not-a-number": lambda u, k: u.update_query(expires="9" * 40),
    # str.isdigit() says yes to "²", int() says no: once a 500.
    "expires-superscript-digit": lambda u, k: u.update_query(expires="\u00b2"),
    "signature-first-char": lambda u, k: u.update_query(signature=_flip(u.query["signature"], 0)),
    "signature-last-char": lambda u, k: u.update_query(signature=_flip(u.query["signature"], -1)),
    "signature-truncated": lambda u, k: u.update_query(signature=u.query["signature"][:-1]),
    "signature-empty": lambda u, k: u.update_query(signature=""),
    "signature-non-ascii": lambda u, k: u.update_query(signature="é" * 43),
    "signature-from-another-key": lambda u, k: _resigned(u, OTHER_SIGNER),
    "disposition-swapped": lambda u, k: u.update_query(
        disposition="inline" if u.query["disposition"] == "attachment" else "attachment"),
    "disposition-with-crlf": lambda u, k: u.update_query(
        disposition=u.query["disposition"] + "\r\nX-Injected: yes"),
    "loc-other-user": lambda u, k: u.update_query(loc=u.query["loc"].replace(".1.", ".2.", 1)),
    "loc-other-format": lambda u, k: u.update_query(loc=u.query["loc"].replace(".wav", ".mp3")),
    "loc-traversal": lambda u, k: u.update_query(loc="default.local.1.../../../etc.audio.wav"),
    "by-other-principal": lambda u, k: u.update_query(by=u.query["by"] + "0"),
    "by-removed": lambda u, k: u.with_query({n: v for n, v in u.query.items() if n != "by"}),
    "by-with-crlf": lambda u, k: u.update_query(by=u.query["by"] + "\r\nX-Injected: yes"),
    "query-on-download-route": lambda u, k: u.with_path(
        f"/recordings/{k.rid}/media/{k.mid}/download").with_query(u.query),
}


@pytest.mark.parametrize("tamper", TAMPERS)
async def test_altered_signed_link_is_refused(links: Links, tamper: str, wav_bytes: bytes) -> None:
    assert links.urls, "the gateway handed out no signed link"
    for route, url in links.urls.items():
        forged = TAMPERS[tamper](url, links)
        status, body = await ask(links.gw, "GET", forged, who=None)
        assert status == 401, (route, forged)
        assert set(body) == {"detail"}  # JSON, not a single byte of the recording
        async with links.gw.client.head(forged) as resp:
            assert resp.status == 401
            assert not set(INJECTED) & {name.lower() for name in resp.headers}
        async with links.gw.client.post(forged) as resp:
            assert resp.status in (401, 405)  # GET and HEAD only, signed or not
        # The link as it was handed out still plays: the refusal was the alteration's.
        assert await ask(links.gw, "GET", url, who=None) == (200, wav_bytes)


async def test_signed_link_reused_after_expiry_is_refused(
    aiohttp_client: AiohttpClient, settings: Settings, wav_bytes: bytes
) -> None:
    gw = await start_gateway(aiohttp_client, settings.with_changes(presign_expiry=1))
    rid, mid = await gw.recording_with_media(wav_bytes)
    urls = await signed_links(gw, rid, mid)
    for url in urls.values():
        assert await ask(gw, "GET", url, who=None) == (200, wav_bytes)
    expires = max(int(url.query["expires"]) for url in urls.values())
    await asyncio.sleep(max(0.0, expires - time.time()) + 0.1)
    for url in urls.values():
        assert await ask(gw, "GET", url, who=None) == (
            401, {"detail": "Signed URL has expired"})
        status, _ = await ask(gw, "GET", url, None, Range="bytes=0-1")
        assert status == 401


@local_only
async def test_link_signed_with_a_retired_key_is_refused(
    aiohttp_client: AiohttpClient, settings: Settings, wav_bytes: bytes
) -> None:
    gw = await start_gateway(aiohttp_client, settings)
    rid, mid = await gw.recording_with_media(wav_bytes)
    old = (await signed_links(gw, rid, mid))["playback-url"]
    rotated = settings.with_changes(signing_keys=(b"the-new-key-0123456789abcdefghijklmnopq",))
    after = await start_gateway(aiohttp_client, rotated)  # same data dir, old key dropped
    assert await ask(after, "GET", old, who=None) == (401, {"detail": "Invalid signed URL"})
    assert await ask(after, "GET", _resigned(old, UrlSigner(rotated.signing_keys)),
                     who=None) == (200, wav_bytes)


# --- Path traversal and header injection, in every slot ---------------------------------

@dataclass(frozen=True)
class RawAnswer:
    """A response as it came off the wire."""

    status: int
    header_lines: tuple[str, ...]
    body: bytes

    def assert_refused_cleanly(self, what: str) -> None:
        """A 4xx with a JSON detail, and no header line the attacker wrote."""
        assert 400 <= self.status < 500, (what, self.status, self.body)
        names = {line.split(":", 1)[0].strip().lower() for line in self.header_lines}
        assert not names & set(INJECTED), (what, self.header_lines)
        assert set(json.loads(self.body)) == {"detail"}, what


async def send_raw(gw: Gateway, method: str, target: str, who: str | None = "alice",
                   headers: dict[str, str] | None = None, body: bytes = b"") -> RawAnswer:
    """One request written byte for byte (no client normalizes the target), read to EOF."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
             f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in {**(gw.h(who) if who else {}), **(headers or {})}.items())]
    reader, writer = await asyncio.open_connection(gw.client.host, gw.client.port)
    try:
        writer.write("\r\n".join(lines).encode() + b"\r\n\r\n" + body)
        data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    return RawAnswer(int(status_line.split()[1]), tuple(header_lines), payload)


BAD_SEGMENTS = [
    "..", "%2e%2e", "%2E%2E", "..%2f..%2fetc%2fpasswd", "%2fetc%2fpasswd", "..%5c..%5cwin.ini",
    "1%2f..%2f2", "%00", "1%00", "1%2500", "0", "9" * 16, "1" * 17, "9" * 400, "-1", "+1",
    "1e3", "0x1", "%201", "%D9%A1", "%EF%BC%91", "%C3%A9", "1%0d%0aX-Injected:%20yes",
    "1%0aSet-Cookie:%20a=b", "1%22", "1'", "1;x",
]
"""Every one of these in an id, name or meeting slot: a 4xx, never anything else."""

ID_SLOTS = {
    "recording": "GET /recordings/{x}",
    "deleted-recording": "DELETE /recordings/{x}",
    "completed-recording": "POST /recordings/{x}/complete",
    "upload-recording": "POST /recordings/{x}/media?type=audio&format=mp3",
    "raw-recording": "GET /recordings/{x}/media/{mid}/raw",
    "raw-media": "GET /recordings/{rid}/media/{x}/raw",
    "download-recording": "GET /recordings/{x}/media/{mid}/download",
    "download-media": "GET /recordings/{rid}/media/{x}/download",
    "playback-recording": "GET /recordings/{x}/media/{mid}/playback-url",
    "playback-media": "GET /recordings/{rid}/media/{x}/playback-url",
    "transcript-platform": "GET /transcripts/{x}/abc-defg-hij",
    "transcript-meeting": "GET /transcripts/google_meet/{x}",
    "storage-name": "POST /storage/{x}/check",
}


async def attack(gw: Gateway, request: str, values: list[str], who: str = "alice",
                 **ids: int) -> set[int]:
    """Send `METHOD target` once per value in its `{x}`; each must be refused cleanly."""
    method, template = request.split(" ", 1)
    statuses = set()
    for bad in values:
        target = template.format(x=bad, **ids)
        answer = await send_raw(gw, method, target, who, body=MP3 if "/media?" in target else b"")
        answer.assert_refused_cleanly(target)
        statuses.add(answer.status)
    return statuses


@pytest.mark.parametrize("slot", ID_SLOTS)
async def test_traversal_and_injection_in_path_slot(
    gw: Gateway, wav_bytes: bytes, slot: str
) -> None:
    rid, mid = await gw.recording_with_media(wav_bytes)
    before = (files_around(gw), gw.probe.objects(), await state(gw, rid, mid, "alice"))
    who = "admin" if slot == "storage-name" else "alice"
    await attack(gw, ID_SLOTS[slot], BAD_SEGMENTS, who, rid=rid, mid=mid)
    assert (files_around(gw), gw.probe.objects(), await state(gw, rid, mid, "alice")) == before


BAD_QUERY_VALUES = [
    "..%2F..%2F..%2Fetc%2Fpasswd", "../../x", "mp3%2F..", "mp3%0D%0AX-Injected:%20yes",
    "mp3%0aSet-Cookie:%20a=b", "mp3%00", "%22mp3%22", "mp3'", "m%C3%BCp3", "%E2%80%AEmp3",
    "mp3%20", "MP3", "mp3;x", "mp3&format=wav",
]

QUERY_SLOTS = {
    "upload-format": "POST /recordings/{rid}/media?type=audio&format={x}",
    "upload-type": "POST /recordings/{rid}/media?type={x}&format=mp3",
    "list-limit": "GET /recordings?limit={x}",
    "list-offset": "GET /recordings?offset={x}",
    "list-meeting-id": "GET /recordings?meeting_id={x}",
}


@pytest.mark.parametrize("slot", QUERY_SLOTS)
async def test_traversal_and_injection_in_query_slot(gw: Gateway, slot: str) -> None:
    rid = (await gw.create_recording())["id"]
    before = (files_around(gw), gw.probe.objects())
    assert await attack(gw, QUERY_SLOTS[slot], BAD_QUERY_VALUES, rid=rid) == {422}
    assert (files_around(gw), gw.probe.objects()) == before
    assert (await ask(gw, "GET", f"/recordings/{rid}"))[1]["media_files"] == []


BAD_FIELD_VALUES = ["../../etc/passwd", "a/b", "a\\b", "a\r\nX-Injected: yes", "a\nb", 'a"b',
                    "a'b", "é", "a\x00b", "a b", "", 7, ["a"]]


@pytest.mark.parametrize("field", ["session_uid", "platform", "native_meeting_id", "source",
                                   "storage"])
async def test_traversal_and_injection_in_recording_field(gw: Gateway, field: str) -> None:
    before = files_around(gw)
    for bad in BAD_FIELD_VALUES:
        async with gw.client.post("/recordings", json={field: bad}, headers=gw.h()) as resp:
            assert resp.status == 422, (field, bad)
            assert set(await resp.json()) == {"detail"}
            assert not set(INJECTED) & {name.lower() for name in resp.headers}
    assert (await ask(gw, "GET", "/recordings"))[1] == {"recordings": []}
    assert files_around(gw) == before and gw.probe.objects() == []


@pytest.mark.parametrize(("header", "status"), [("X-API-Key", 401), ("X-Tenant", 403)])
async def test_hostile_credential_headers_are_refused_cleanly(
    gw: Gateway, header: str, status: int
) -> None:
    for bad in ('"', "'", "../../etc/passwd", "%0d%0aX-Injected: yes", "ключ", "a" * 8000):
        answer = await send_raw(gw, "GET", "/recordings", headers={header: bad})
        answer.assert_refused_cleanly(f"{header}: {bad}")
        assert answer.status == status


DISPOSITION_RE = re.compile(
    r"(inline|attachment); filename=\"[0-9]{1,16}_audio\.wav\"; "
    r"filename\*=UTF-8''[0-9]{1,16}_audio\.wav")


async def test_served_content_disposition_is_one_well_formed_header(
    gw: Gateway, wav_bytes: bytes
) -> None:
    rid, mid = await gw.recording_with_media(wav_bytes)
    sources: list[tuple[str | URL, str | None]] = [(gw.raw_path(rid, mid), "alice")]
    sources += [(url, None) for url in (await signed_links(gw, rid, mid)).values()]
    for url, who in sources:
        async with gw.client.get(url, headers=gw.h(who) if who else {}) as resp:
            assert resp.status == 200
            assert len(resp.headers.getall("Content-Disposition")) == 1
            assert DISPOSITION_RE.fullmatch(resp.headers["Content-Disposition"]), url


@pytest.mark.parametrize("filename", [
    'a"; filename="evil.exe', "a\r\nX-Injected: yes.wav", "a\nb.wav", "a\\\".wav",
    "записи.wav", "a%0d%0a.wav", "a;b=c.wav", "\u202egnp.wav",
])
def test_content_disposition_neutralizes_hostile_filenames(filename: str) -> None:
    value = content_disposition("attachment", filename)
    assert not re.search(r"[\x00-\x1f\x7f]", value)
    fallback = re.fullmatch(r"attachment; filename=\"([^\"\\]*)\"; filename\*=UTF-8''(\S+)",
                            value)
    assert fallback is not None, value
    assert fallback[1].isascii() and unquote(fallback[2]) == filename


# --- Guessing keys ----------------------------------------------------------------------

@local_only
async def test_a_thousand_wrong_keys_from_one_address_meet_429(
    aiohttp_client: AiohttpClient, settings: Settings, wav_bytes: bytes
) -> None:
    # One token back every 20 s: none comes back while the test runs.
    gw = await start_gateway(aiohttp_client, settings.with_changes(auth_failure_burst=20,
                                                                   auth_failure_rate=0.05))
    rid, mid = await gw.recording_with_media(wav_bytes)  # correct keys take no token
    answers = []
    for i in range(1000):
        # A forwarding header names the peer only to the upstream; it frees no one here.
        headers = {"X-API-Key": f"gw_guess{i}", "X-Forwarded-For": f"203.0.113.{i % 250}"}
        async with gw.client.get("/recordings", headers=headers) as r:
            answers.append((r.status, r.headers.get("Retry-After"), await r.json()))
    assert [status for status, _, _ in answers] == [401] * 20 + [429] * 980
    assert all(1 <= int(retry) <= 20 for _, retry, _ in answers[20:] if retry)
    assert all(retry is not None for _, retry, _ in answers[20:])
    assert answers[-1][2] == {
        "detail": "Too many failed authentication attempts from this address; retry later"}
    # While the address is limited a correct key waits too: the limit is decided
    # before authentication, so a flood costs no key lookup.
    assert await ask(gw, "GET", gw.raw_path(rid, mid)) == (429, answers[-1][2])
    # Another address is not affected.
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as elsewhere, elsewhere.get(
        gw.client.make_url(gw.raw_path(rid, mid)), headers=gw.h()
    ) as r:
        assert (r.status, await r.read()) == (200, wav_bytes)


# --- Secrets in logs --------------------------------------------------------------------

@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every line at DEBUG, as `gateway serve` logs with GATEWAY_LOG_LEVEL=debug."""
    caplog.set_level(logging.DEBUG)
    levels = {name: logging.getLogger(name).level for name in CREDENTIAL_LOGGERS}
    quiet_credential_loggers()
    yield caplog
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


async def test_no_secret_in_any_log_line(
    aiohttp_client: AiohttpClient, settings: Settings, wav_bytes: bytes,
    debug_log: pytest.LogCaptureFixture, request: pytest.FixtureRequest,
) -> None:
    secret_key = f"secret-{uuid.uuid4().hex}"
    if settings.default_storage == "azure":
        secret_key = AZURITE_KEY  # the account key that signs every request and SAS URL
    if settings.storage_backend == "s3":
        settings = settings.with_changes(aws_access_key_id="AKIALOGCHECK0000",
                                         aws_secret_access_key=secret_key)
    jwt_secret = f"jwt-{uuid.uuid4().hex}-{uuid.uuid4().hex}"
    gw = await start_gateway(aiohttp_client,
                             settings.with_changes(jwt_secrets=(jwt_secret.encode(),)))
    rid, mid = await gw.recording_with_media(wav_bytes)
    _, info = await ask(gw, "GET", f"/recordings/{rid}/media/{mid}/download")
    download = URL(info["download_url"])
    links = await signed_links(gw, rid, mid)
    guessed = "gw_guessed-key-0123456789"
    tokens = [token(jwt_secret), token(jwt_secret, exp=int(time.time()) - 3600),
              token(OTHER_SECRET)]
    # A fresh session: aiohttp decides per connection whether to write access lines.
    async with aiohttp.ClientSession() as session:
        requests: list[tuple[str | URL, dict[str, str]]] = [
            (gw.raw_path(rid, mid), gw.h()), ("/recordings", {"X-API-Key": guessed}),
            (f"/recordings?api_key={guessed}", {}),
            *((url, {}) for url in links.values()),
            *((url.update_query(signature=url.query["signature"][::-1]), {})
              for url in links.values()),
            *(("/recordings", bearer(value)) for value in tokens),
            (f"/recordings?access_token={tokens[0]}", {}),
        ]
        for url, headers in requests:
            async with session.get(gw.client.make_url(url), headers=headers) as resp:
                await resp.read()
        if gw.backend in ("s3", "gcs", "azure"):  # the presigned URL goes to the store, not to us
            async with session.get(download) as resp:
                assert await resp.read() == wav_bytes
        async with session.delete(gw.client.make_url(f"/recordings/{rid}"),
                                  headers=gw.h()) as resp:
            assert resp.status == 200
    await asyncio.sleep(0.05)
    # moto's and werkzeug's own lines are the store's log, not the gateway's.
    lines = [r.getMessage() for r in debug_log.records
             if not r.name.startswith(("moto", "werkzeug"))]
    access = [line for line in lines if "principal=" in line]
    assert any("signature=[redacted]" in line and "principal=link:1" in line
               for line in access)
    assert any(f'"GET {gw.raw_path(rid, mid)} HTTP/1.1" 200' in line and "principal=1 " in line
               for line in access)
    assert any('"GET /recordings HTTP/1.1" 401' in line for line in access)
    assert any('"GET /recordings HTTP/1.1" 200' in line and "principal=1 " in line
               for line in access)  # the Bearer token's user, by id
    secrets = [gw.keys["alice"], guessed, secret_key, jwt_secret, *tokens,
               *(value.rsplit(".", 1)[1] for value in tokens),
               *(url.query["signature"] for url in links.values()),
               *(url.query["signature"][::-1] for url in links.values())]
    if "X-Amz-Signature" in download.query:
        secrets += [download.query["X-Amz-Signature"], download.query["X-Amz-Credential"]]
    if "sig" in download.query:  # an Azure SAS
        secrets.append(download.query["sig"])
    if gw.backend == "gcs":  # the service account's key, its access tokens, URL signatures
        private_key = json.loads(settings.gcs_credentials)["private_key"]
        secrets += [*private_key.splitlines()[1:-2], download.query["X-Goog-Signature"],
                    *request.getfixturevalue("gcs_token_endpoint").issued]
    for secret in secrets:
        assert not [line for line in lines if secret in line], secret


# --- Sidecar mode: the upstream decides --------------------------------------------------

class ReadOnlyKeyMeetingApi(FakeMeetingApi):
    """A meeting API with a key that may read alice's recordings but not delete them, and
    one whose deletes meet a policy of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.keys["key-alice-reader"] = 1
        self.keys["key-alice-locked"] = 1

    async def delete_recording(self, request: web.Request) -> web.Response:
        if request.headers.get("X-API-Key") == "key-alice-reader":
            return web.json_response({"detail": "Read-only key"}, status=403)
        if request.headers.get("X-API-Key") == "key-alice-locked":
            return web.json_response({"detail": "Recordings are locked"}, status=409)
        return await super().delete_recording(request)


@local_only
@pytest.mark.parametrize(("key", "status"), [("key-alice-reader", 403),
                                              ("key-alice-locked", 409)])
async def test_sidecar_delete_by_a_caller_the_upstream_refuses_keeps_the_bytes(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, settings: Settings,
    blob: bytes, key: str, status: int,
) -> None:
    side = await start_sidecar(aiohttp_client, aiohttp_server, settings,
                               api=ReadOnlyKeyMeetingApi())
    side.api.add_recording(RECORDING, 1, SESSION, [(MEDIA, "audio", "wav", "local")])
    side.probe.put(f"recordings/1/{RECORDING}/{SESSION}.wav", blob)
    caller = {"X-API-Key": key}
    async with side.client.get(side.raw, headers=caller) as resp:
        assert (resp.status, await resp.read()) == (200, blob)  # it may read
    async with side.client.delete(f"/recordings/{RECORDING}", headers=caller) as resp:
        assert resp.status == status
        assert set(await resp.json()) == {"detail"}
    assert side.api.deleted == []
    assert side.probe.objects() == [f"recordings/1/{RECORDING}/{SESSION}.wav"]
    async with side.client.get(side.raw, headers=caller) as resp:
        assert (resp.status, await resp.read()) == (200, blob)  # and it still plays
    # The owner's own key may delete: the upstream first, then the bytes.
    async with side.client.delete(f"/recordings/{RECORDING}",
                                  headers={"X-API-Key": "key-alice"}) as resp:
        assert resp.status == 200
    assert side.api.deleted == [RECORDING]
    assert side.probe.objects() == []
