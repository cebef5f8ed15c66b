"""`gateway upload` and `gateway recordings list|get`, run as a person runs them.

Each command is a child process talking HTTP to a real gateway on 127.0.0.1 (in this
process), and the tests read what a person or a script would: exit status, stdout,
stderr, and the bytes the gateway then serves.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from gateway.models import Role
from gateway.settings import SettingsError, load_client_settings
from tests.conftest import Gateway
from tests.test_settings_and_cli import free_port

MIB = 1024 * 1024


@pytest.fixture
def backend() -> str:
    """Local disk: the commands speak HTTP and never see the storage behind it."""
    return "local"


@dataclass(frozen=True)
class Run:
    status: int
    stdout: str
    stderr: str
    peak_rss: int  # bytes: the command's own peak resident memory

    def json(self) -> Any:
        return json.loads(self.stdout)


def _run_cli(args: tuple[str, ...], env: dict[str, str], cwd: Path) -> Run:
    keep = ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV", "SYSTEMROOT")
    base = {k: v for k, v in os.environ.items() if k in keep}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen([sys.executable, "-m", "gateway", *args],
                                   env={**base, **env}, cwd=cwd, stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=err)
        # VmHWM is the peak RSS of the program itself. (getrusage and wait4 report the
        # larger of that and this process's own size, which the child had before exec.)
        peak = 0
        deadline = time.monotonic() + 120  # a hung command fails the test, never the run
        while True:
            peak = max(peak, _vm_hwm(process.pid))
            try:
                process.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    process.kill()
                    process.wait()
                    raise
        out.seek(0)
        err.seek(0)
        return Run(process.returncode, out.read().decode(), err.read().decode(), peak)


def _vm_hwm(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0  # already gone
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0  # a zombie has no memory left to report


class Cli:
    """Runs `gateway ...` against one gateway, as one of its users by default."""

    def __init__(self, gw: Gateway, cwd: Path) -> None:
        self.gw = gw
        self.cwd = cwd
        self.url = str(gw.client.make_url("/"))

    async def __call__(self, *args: str, who: str | None = "alice", **env: str) -> Run:
        variables = {"GATEWAY_URL": self.url}
        if who is not None:
            variables["GATEWAY_API_KEY"] = self.gw.keys[who]
        variables.update(env)
        # In a thread: the gateway answering it runs on this event loop.
        return await asyncio.to_thread(_run_cli, args, variables, self.cwd)


@pytest.fixture
def cli(gw: Gateway, tmp_path: Path) -> Cli:
    work = tmp_path / "work"
    work.mkdir()
    return Cli(gw, work)


async def raw_bytes(gw: Gateway, recording_id: int, media_id: int) -> bytes:
    async with gw.client.get(gw.raw_path(recording_id, media_id), headers=gw.h()) as resp:
        assert resp.status == 200
        return await resp.read()


async def api_list(gw: Gateway) -> list[dict[str, Any]]:
    async with gw.client.get("/recordings?limit=200", headers=gw.h()) as resp:
        assert resp.status == 200
        recordings: list[dict[str, Any]] = (await resp.json())["recordings"]
        return recordings


class TestUpload:
    async def test_into_an_existing_recording_bytes_come_back_from_raw(
        self, gw: Gateway, cli: Cli, wav_bytes: bytes
    ) -> None:
        recording = await gw.create_recording()
        (cli.cwd / "tone.wav").write_bytes(wav_bytes)
        run = await cli("upload", "tone.wav", "--recording", str(recording["id"]), "--json")
        assert run.status == 0, run.stderr
        answer = run.json()  # stdout is the JSON document and nothing else
        media = answer["media_file"]
        assert (media["type"], media["format"]) == ("audio", "wav")
        assert media["file_size_bytes"] == len(wav_bytes) and media["duration_seconds"] == 4.0
        assert answer["recording"]["id"] == recording["id"]
        assert answer["recording"]["status"] == "in_progress"
        assert answer["recording"]["media_files"] == [media]
        assert await raw_bytes(gw, recording["id"], media["id"]) == wav_bytes
        assert not (cli.cwd / "data").exists()  # a client creates no server files

    async def test_create_complete_and_play_without_a_key(
        self, gw: Gateway, cli: Cli, blob: bytes
    ) -> None:
        (cli.cwd / "talk.webm").write_bytes(blob)
        run = await cli("upload", "talk.webm", "--create", "--type", "video", "--meeting-id",
                        "16", "--platform", "google_meet", "--native-meeting-id",
                        "abc-defg-hij", "--complete")
        assert run.status == 0, run.stderr
        assert run.stdout == ""  # a person's messages go to stderr
        recording = (await api_list(gw))[0]
        assert recording["meeting_id"] == 16 and recording["status"] == "completed"
        media = recording["media_files"][0]
        assert (media["type"], media["format"]) == ("video", "webm")
        assert f"Created recording {recording['id']}" in run.stderr
        assert f"to recording {recording['id']} as media file {media['id']}" in run.stderr
        link = run.stderr.strip().splitlines()[-1].strip()
        async with ClientSession() as browser, browser.get(link) as resp:  # no key
            assert resp.status == 200 and await resp.read() == blob
            assert resp.headers["Content-Disposition"].startswith("inline")

    async def test_progress_goes_to_a_terminal_json_stays_clean(
        self, gw: Gateway, cli: Cli, blob: bytes
    ) -> None:
        recording = await gw.create_recording()
        (cli.cwd / "a.mp3").write_bytes(blob)
        primary, secondary = os.openpty()  # stderr is a terminal: tqdm draws its bar
        # A new pseudo-terminal is 0 columns wide, where a bar has no room at all.
        fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        try:
            def run_with_terminal() -> tuple[int, str, str]:
                screen: list[bytes] = []

                def read_screen() -> None:
                    while True:
                        try:
                            part = os.read(primary, 65536)
                        except OSError:  # EIO: the terminal has no writer left
                            return
                        if not part:
                            return
                        screen.append(part)

                reader = threading.Thread(target=read_screen)
                reader.start()
                process = subprocess.Popen(
                    [sys.executable, "-m", "gateway", "upload", "a.mp3", "--recording",
                     str(recording["id"]), "--json"],
                    env={"PATH": os.environ["PATH"], "GATEWAY_URL": cli.url,
                         "GATEWAY_API_KEY": gw.keys["alice"], "TERM": "xterm"},
                    cwd=cli.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=secondary)
                os.close(secondary)  # the child holds the terminal's only writer now
                stdout, _ = process.communicate(timeout=120)
                reader.join(timeout=60)
                return (process.returncode, stdout.decode(),
                        b"".join(screen).decode(errors="replace"))

            status, stdout, screen = await asyncio.to_thread(run_with_terminal)
        finally:
            os.close(primary)
        assert status == 0, screen
        assert json.loads(stdout)["media_file"]["file_size_bytes"] == len(blob)
        assert "a.mp3:" in screen and "%|" in screen  # the bar, with its name

    async def test_memory_does_not_grow_with_the_file(self, gw: Gateway, cli: Cli) -> None:
        piece = b"".join(i.to_bytes(4, "big") * 16 for i in range(MIB // 64))  # 1 MiB
        big = cli.cwd / "big.mp3"
        digest = hashlib.sha256()
        with big.open("wb") as handle:
            for index in range(200):
                chunk = index.to_bytes(8, "big") + piece[8:]  # no two MiB alike
                handle.write(chunk)
                digest.update(chunk)
        (cli.cwd / "small.mp3").write_bytes(piece)
        small_run = await cli("upload", "small.mp3", "--create", "--json")
        big_run = await cli("upload", "big.mp3", "--create", "--json")
        assert small_run.status == 0 and big_run.status == 0, big_run.stderr
        answer = big_run.json()
        assert answer["media_file"]["file_size_bytes"] == 200 * MIB
        received = hashlib.sha256()
        async with gw.client.get(gw.raw_path(answer["recording"]["id"],
                                             answer["media_file"]["id"]),
                                 headers=gw.h()) as resp:
            async for part in resp.content.iter_chunked(MIB):
                received.update(part)
        assert received.hexdigest() == digest.hexdigest()
        # The same command for a file 200 times larger: a buffered file would add
        # 200 MiB; the upload holds a piece or two at a time.
        growth = big_run.peak_rss - small_run.peak_rss
        print(f"peak RSS: {small_run.peak_rss / MIB:.1f} MiB for 1 MiB, "
              f"{big_run.peak_rss / MIB:.1f} MiB for 200 MiB")
        assert growth < 24 * MIB, f"peak RSS grew by {growth / MIB:.1f} MiB"


class TestListAndGet:
    async def test_pages_offsets_and_all(self, gw: Gateway, cli: Cli) -> None:
        for meeting in range(5):
            await gw.create_recording(meeting_id=meeting)
        everything = [r["id"] for r in await api_list(gw)]
        assert len(everything) == 5

        first = await cli("recordings", "list", "--limit", "2", "--json")
        assert first.status == 0, first.stderr
        page = first.json()
        assert [r["id"] for r in page["recordings"]] == everything[:2]
        assert (page["offset"], page["next_offset"]) == (0, 2)

        last = (await cli("recordings", "list", "--limit", "2", "--offset", "4",
                          "--json")).json()
        assert [r["id"] for r in last["recordings"]] == everything[4:]
        assert last["next_offset"] is None

        every = (await cli("recordings", "list", "--all", "--limit", "2", "--json")).json()
        assert [r["id"] for r in every["recordings"]] == everything
        assert every["next_offset"] is None
        resumed = (await cli("recordings", "list", "--all", "--offset", "3", "--limit", "2",
                             "--json")).json()
        assert [r["id"] for r in resumed["recordings"]] == everything[3:]

        table = await cli("recordings", "list", "--limit", "2")
        lines = table.stdout.splitlines()
        assert lines[0].split() == ["ID", "MEETING", "STATUS", "CREATED", "MEDIA"]
        assert [int(line.split()[0]) for line in lines[1:]] == everything[:2]
        assert "next page: gateway recordings list --offset 2 --limit 2" in table.stderr

        one_meeting = (await cli("recordings", "list", "--meeting-id", "3", "--json")).json()
        assert [r["meeting_id"] for r in one_meeting["recordings"]] == [3]

    async def test_get_as_json_and_as_text(self, gw: Gateway, cli: Cli, wav_bytes: bytes) -> None:
        recording_id, media_id = await gw.recording_with_media(wav_bytes)
        run = await cli("recordings", "get", str(recording_id), "--json")
        assert run.status == 0, run.stderr
        async with gw.client.get(f"/recordings/{recording_id}", headers=gw.h()) as resp:
            assert run.json() == await resp.json()

        text = await cli("recordings", "get", str(recording_id))
        assert text.stdout.startswith(f"Recording {recording_id}: in_progress\n")
        assert f"{cli.url.rstrip('/')}/recordings/{recording_id}/media/{media_id}/raw" \
            in text.stdout
        assert "audio/wav" in text.stdout

        linked = (await cli("recordings", "get", str(recording_id), "--links", "--json")).json()
        link = linked["media_files"][0]["playback_url"]
        async with ClientSession() as browser, browser.get(
            link, headers={"Range": "bytes=0-3"}
        ) as resp:
            assert resp.status == 206 and await resp.read() == b"RIFF"


class TestExitStatus:
    async def test_wrong_key_is_4(self, gw: Gateway, cli: Cli, wav_bytes: bytes) -> None:
        recording = await gw.create_recording()
        (cli.cwd / "tone.wav").write_bytes(wav_bytes)
        wrong = {"GATEWAY_API_KEY": "gw_not-a-key-at-all"}
        for args in (("recordings", "list"), ("recordings", "get", str(recording["id"])),
                     ("upload", "tone.wav", "--recording", str(recording["id"]))):
            run = await cli(*args, **wrong)
            assert run.status == 4, (args, run.stderr)
            assert run.stdout == ""
            assert run.stderr == ("gateway: error: the gateway answered 401: Invalid or "
                                  "missing API key (check --key or GATEWAY_API_KEY)\n")
        await gw.add_key("watcher", 30, Role.VIEWER)
        viewer = await cli("upload", "tone.wav", "--create", who="watcher")
        assert viewer.status == 4 and "answered 403" in viewer.stderr

    async def test_unknown_recording_is_3(self, gw: Gateway, cli: Cli, blob: bytes) -> None:
        bob = await gw.create_recording("bob")  # exists, but not for alice
        (cli.cwd / "a.mp3").write_bytes(blob)
        for recording_id in ("999999", str(bob["id"])):
            for args in (("recordings", "get", recording_id),
                         ("upload", "a.mp3", "--recording", recording_id)):
                run = await cli(*args)
                assert run.status == 3, (args, run.stderr)
                assert run.stderr == (f"gateway: error: recording {recording_id} not found "
                                      "(or not visible to this key)\n")

    async def test_unreachable_gateway_is_5(self, cli: Cli) -> None:
        url = f"http://127.0.0.1:{free_port()}"
        run = await cli("recordings", "list", "--url", url)
        assert run.status == 5
        assert run.stderr == (f"gateway: error: cannot reach the gateway at {url} "
                              "(Connection refused)\n")

    async def test_usage_errors_are_2(self, gw: Gateway, cli: Cli, blob: bytes) -> None:
        recording = await gw.create_recording()
        missing = await cli("upload", "nowhere.wav", "--recording", str(recording["id"]))
        assert (missing.status, missing.stderr) == (
            2, "gateway: error: nowhere.wav: no such file\n")
        (cli.cwd / "notes.txt").write_bytes(blob)
        unknown = await cli("upload", "notes.txt", "--recording", str(recording["id"]))
        assert unknown.status == 2 and "give --format" in unknown.stderr
        not_wav = await cli("upload", "notes.txt", "--format", "wav", "--create")
        assert not_wav.status == 2 and "no RIFF/WAVE header" in not_wav.stderr
        assert [r["id"] for r in await api_list(gw)] == [recording["id"]]  # none created
        no_key = await cli("recordings", "list", who=None)
        assert (no_key.status, no_key.stderr) == (
            2, "gateway: error: no API key: pass --key or set GATEWAY_API_KEY\n")
        bad_url = await cli("recordings", "list", "--url", "ftp://example.com")
        assert (bad_url.status, bad_url.stderr) == (
            2, "gateway: error: --url: must be an http(s) URL, got 'ftp://example.com'\n")
        too_many = await cli("recordings", "list", "--limit", "500")
        assert too_many.status == 2 and "must be an integer from 1 to 200" in too_many.stderr

    async def test_a_completed_recording_refuses_more_media_with_1(
        self, gw: Gateway, cli: Cli, blob: bytes
    ) -> None:
        recording = await gw.create_recording()
        async with gw.client.post(f"/recordings/{recording['id']}/complete",
                                  headers=gw.h()) as resp:
            assert resp.status == 200
        (cli.cwd / "a.mp3").write_bytes(blob)
        run = await cli("upload", "a.mp3", "--recording", str(recording["id"]))
        assert run.status == 1
        assert run.stderr == ("gateway: error: the gateway answered 409: Recording is "
                              "completed; it takes no more media\n")


class TestClientSettings:
    def test_url_defaults_to_the_local_gateway(self) -> None:
        assert load_client_settings({}).url == "http://127.0.0.1:8080"
        wildcard = {"GATEWAY_HOST": "0.0.0.0", "GATEWAY_PORT": "9000"}  # noqa: S104
        assert load_client_settings(wildcard).url == "http://127.0.0.1:9000"
        assert load_client_settings({"GATEWAY_HOST": "::1"}).url == "http://[::1]:8080"
        assert load_client_settings({"GATEWAY_URL": "https://rec.example.com/api/",
                                     "GATEWAY_PORT": "1"}).url == "https://rec.example.com/api"

    def test_key_from_gateway_api_key_else_api_key(self) -> None:
        assert load_client_settings({"API_KEY": "gw_a"}).api_key == "gw_a"
        assert load_client_settings({"API_KEY": "gw_a", "GATEWAY_API_KEY": "gw_b"})\
            .api_key == "gw_b"
        assert "gw_b" not in repr(load_client_settings({"GATEWAY_API_KEY": "gw_b"}))

    @pytest.mark.parametrize(("env", "message"), [
        ({"GATEWAY_URL": "example.com"},
         "GATEWAY_URL: must be an http(s) URL, got 'example.com'"),
        ({"GATEWAY_PORT": "x"}, "GATEWAY_PORT: must be an integer from 0 to 65535, got 'x'"),
        ({"GATEWAY_PORT": "0"}, "GATEWAY_URL: is required when GATEWAY_PORT is 0"),
        ({"API_KEY": "two words"}, "API_KEY: must be printable ASCII without spaces"),
    ])
    def test_wrong_values_name_the_variable(self, env: dict[str, str], message: str) -> None:
        with pytest.raises(SettingsError) as caught:
            load_client_settings(env)
        assert str(caught.value) == message
