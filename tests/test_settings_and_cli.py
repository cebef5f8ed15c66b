"""Settings from the environment, and the `gateway` command as an operator runs it."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gateway.settings import VARIABLES, SettingsError, load_settings, reference_markdown
from tests.gateway_process import wait_until_up


def run_gateway(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], env={**_base_env(), **env},
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False,
    )


def _base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV", "SYSTEMROOT")
    return {k: v for k, v in os.environ.items() if k in keep}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TestLoadSettings:
    def test_defaults(self, tmp_path: Path) -> None:
        settings = load_settings({"GATEWAY_DATA_DIR": str(tmp_path / "d")})
        assert settings.port == 8080 and settings.host == "127.0.0.1"
        assert settings.storage_backend == "local" and settings.local_storage_fsync is True
        assert settings.catalog_path == tmp_path / "d" / "catalog.sqlite3"
        assert settings.local_storage_dir == tmp_path / "d" / "recordings"
        assert settings.presign_expiry == 3600

    def test_signing_key_is_generated_once_with_mode_0600(self, tmp_path: Path) -> None:
        env = {"GATEWAY_DATA_DIR": str(tmp_path)}
        first = load_settings(env).signing_keys
        key_file = tmp_path / "signing.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert load_settings(env).signing_keys == first
        assert not list(tmp_path.glob(".signing-*"))  # no temporary file left behind

    def test_explicit_keys_rotate(self, tmp_path: Path) -> None:
        settings = load_settings({"GATEWAY_DATA_DIR": str(tmp_path),
                                  "GATEWAY_SIGNING_KEY": "n" * 32 + ", " + "o" * 40})
        assert settings.signing_keys == (b"n" * 32, b"o" * 40)
        assert not (tmp_path / "signing.key").exists()

    @pytest.mark.parametrize(("env", "message"), [
        ({"STORAGE_BACKEND": "ftp"},
         "STORAGE_BACKEND: must be one of local, minio, s3, gcs, got 'ftp'"),
        ({"GATEWAY_PORT": "abc"},
         "GATEWAY_PORT: must be an integer from 0 to 65535, got 'abc'"),
        ({"GATEWAY_PORT": "70000"},
         "GATEWAY_PORT: must be an integer from 0 to 65535, got '70000'"),
        ({"LOCAL_STORAGE_FSYNC": "maybe"},
         "LOCAL_STORAGE_FSYNC: must be true or false, got 'maybe'"),
        ({"GATEWAY_PRESIGN_EXPIRY": "0"},
         "GATEWAY_PRESIGN_EXPIRY: must be an integer from 1 to 604800, got '0'"),
        ({"GATEWAY_SIGNING_KEY": "short"},
         "GATEWAY_SIGNING_KEY: each comma-separated key must be at least 32 characters long"),
        ({"GATEWAY_MAX_UPLOAD_BYTES": "lots"},
         "GATEWAY_MAX_UPLOAD_BYTES: must be a positive size such as 2147483648 or 2G, got 'lots'"),
        ({"GATEWAY_PUBLIC_URL": "example.com"},
         "GATEWAY_PUBLIC_URL: must be an absolute URL or a path starting with '/', "
         "got 'example.com'"),
        ({"GATEWAY_LOG_LEVEL": "loud"},
         "GATEWAY_LOG_LEVEL: must be one of debug, info, warning, error, got 'loud'"),
    ])
    def test_wrong_values_name_the_variable(
        self, tmp_path: Path, env: dict[str, str], message: str
    ) -> None:
        with pytest.raises(SettingsError) as caught:
            load_settings({"GATEWAY_DATA_DIR": str(tmp_path), **env})
        assert str(caught.value) == message

    def test_sizes(self, tmp_path: Path) -> None:
        for raw, size in (("2G", 2 * 1024**3), ("512M", 512 * 1024**2), ("1000", 1000),
                          ("3GiB", 3 * 1024**3)):
            settings = load_settings({"GATEWAY_DATA_DIR": str(tmp_path),
                                      "GATEWAY_MAX_UPLOAD_BYTES": raw})
            assert settings.max_upload_bytes == size

    def test_unwritable_directories(self, tmp_path: Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("not a directory")
        with pytest.raises(SettingsError, match=r"^GATEWAY_DATA_DIR: directory .* is not "):
            load_settings({"GATEWAY_DATA_DIR": str(blocker / "data")})
        with pytest.raises(SettingsError, match=r"^LOCAL_STORAGE_DIR: directory .* is not "):
            load_settings({"GATEWAY_DATA_DIR": str(tmp_path / "ok"),
                           "LOCAL_STORAGE_DIR": str(blocker / "rec")})


class TestCommand:
    def test_bad_setting_stops_startup_with_one_line(self, tmp_path: Path) -> None:
        result = run_gateway("serve", env={"GATEWAY_DATA_DIR": str(tmp_path),
                                           "GATEWAY_PORT": "abc"})
        assert result.returncode == 2
        assert result.stderr == (
            "gateway: error: GATEWAY_PORT: must be an integer from 0 to 65535, got 'abc'\n")
        assert result.stdout == ""

    def test_help_lists_commands_and_variables(self) -> None:
        result = run_gateway("--help", env={})
        assert result.returncode == 0
        for word in ("serve", "keys", "demo", "STORAGE_BACKEND", "LOCAL_STORAGE_FSYNC",
                     "GATEWAY_SIGNING_KEY"):
            assert word in result.stdout

    def test_keys_create_list_revoke(self, tmp_path: Path) -> None:
        env = {"GATEWAY_DATA_DIR": str(tmp_path)}
        created = run_gateway("keys", "create", "--user-id", "7", "--role", "viewer", env=env)
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]
        assert key.startswith("gw_") and len(key) > 40
        listed = run_gateway("keys", "list", env=env)
        assert key[:12] in listed.stdout and "viewer" in listed.stdout
        assert key not in listed.stdout
        assert key.encode() not in (tmp_path / "catalog.sqlite3").read_bytes()
        assert run_gateway("keys", "revoke", key[:12], env=env).returncode == 0
        again = run_gateway("keys", "revoke", key[:12], env=env)
        assert again.returncode == 1 and "no active key" in again.stderr
        bad = run_gateway("keys", "create", "--user-id", "x", env=env)
        assert bad.returncode == 2

    def test_serve_with_two_workers_demo_and_sigterm(self, tmp_path: Path) -> None:
        port = free_port()
        env = {**_base_env(), "GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_PORT": str(port),
               "LOCAL_STORAGE_FSYNC": "false"}
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--workers", "2", "--demo"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            stdin=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_until_up(f"{base}/healthz", process)
            time.sleep(0.5)  # let the second worker bind as well
            workers = _children(process.pid)
            assert len(workers) == 2
            assert process.stdout is not None
            lines: list[str] = []
            while not (lines and lines[-1].startswith("Gateway listening")):
                lines.append(process.stdout.readline())
            key = next(line.split("=", 1)[1].strip() for line in lines if "API_KEY=" in line)
            signed = next(line.strip() for line in lines if "signature=" in line)
            for _ in range(20):  # spread over both workers by the kernel
                request = urllib.request.Request(f"{base}/recordings",
                                                 headers={"X-API-Key": key})
                with urllib.request.urlopen(request, timeout=5) as resp:
                    assert resp.status == 200
            request = urllib.request.Request(signed, headers={"Range": "bytes=0-3"})
            with urllib.request.urlopen(request, timeout=5) as resp:
                assert resp.status == 206 and resp.read() == b"RIFF"
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=20)
            finally:
                process.kill()
                process.communicate()
        assert code == 0


def _wait_until_up(url: str, process: subprocess.Popen[str]) -> None:
    wait_until_up(url, process, lambda: process.communicate()[1])


def _children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if _is_python(int(c))]


def _is_python(pid: int) -> bool:
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    return b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline


def test_configuration_reference_is_current() -> None:
    doc = Path(__file__).parent.parent / "docs" / "configuration.md"
    assert doc.read_text() == reference_markdown(), (
        "docs/configuration.md is out of date; regenerate it (see the command in the file)")


def test_example_environment_files_name_real_settings() -> None:
    known = {variable.name for variable in VARIABLES}
    for example in (Path(__file__).parent.parent / "config").glob("*.env.example"):
        names = re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example.read_text(), re.MULTILINE)
        assert names, example
        assert not set(names) - known, (example.name, sorted(set(names) - known))


def test_digits_that_are_not_ascii_are_refused_in_words(tmp_path: Path) -> None:
    # str.isdigit() accepts "²", which int() refuses: a check that trusts it ends in a
    # traceback instead of the one line that names what is wrong.
    env = {"GATEWAY_DATA_DIR": str(tmp_path)}
    result = run_gateway("keys", "create", "--user-id", "²", env=env)
    assert result.returncode == 2
    assert "argument --user-id: must be a positive integer" in result.stderr
    result = run_gateway("storage", "list", env={**env, "GATEWAY_MAX_UPLOAD_BYTES": "²G"})
    assert (result.returncode, result.stderr) == (2, (
        "gateway: error: GATEWAY_MAX_UPLOAD_BYTES: must be a positive size such as "
        "2147483648 or 2G, got '²G'\n"))


def test_serve_flags_are_validated_like_variables(tmp_path: Path) -> None:
    result = run_gateway("serve", "--port", "99999", env={"GATEWAY_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr == (
        "gateway: error: GATEWAY_PORT: must be an integer from 0 to 65535, got '99999'\n")
    result = run_gateway("serve", "--workers", "2", "--port", "0",
                         env={"GATEWAY_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "port 0 cannot be shared by several workers" in result.stderr
