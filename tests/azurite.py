"""Azurite, the Azure Storage emulator, run for the tests: its blob service only.

`.ci/run` installs it from npm under .cache/node; a machine without it skips the
Azure tests, except on CI (`CI` set), where a missing emulator fails them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from yarl import URL

from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
LOCAL_BIN = ROOT / ".cache" / "node" / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
_LISTENING = re.compile(r"listens on (http://127\.0\.0\.1:[0-9]+)")


def azurite_command() -> str | None:
    if LOCAL_BIN.exists():
        return str(LOCAL_BIN)
    return shutil.which("azurite-blob")


@contextmanager
def run_azurite(location: Path) -> Iterator[str]:
    """Start azurite-blob on 127.0.0.1 and a free port; yield the account's endpoint."""
    command = azurite_command()
    if command is None:
        message = "azurite-blob is not installed (.ci/run installs it under .cache/node)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # The Python SDK may speak a newer service version than Azurite knows; the
    # requests it makes are the same, so Azurite's version check is skipped.
    env = {k: v for k, v in os.environ.items() if k != "AZURITE_ACCOUNTS"}
    # Its output goes to a file, not a pipe that nobody would drain once it runs.
    log_path = location / "azurite.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [command, "--blobHost", "127.0.0.1", "--blobPort", "0", "--location",
             str(location), "--silent", "--skipApiVersionCheck", "--disableTelemetry"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 60
        endpoint = None
        while endpoint is None and process.poll() is None and time.monotonic() < deadline:
            if match := _LISTENING.search(log_path.read_text()):
                endpoint = f"{match[1]}/{ACCOUNT}"
            else:
                time.sleep(0.1)
        if endpoint is None:
            raise RuntimeError("azurite-blob did not start: " + log_path.read_text()[-2000:])
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def write_config(path: Path, settings: Settings) -> Path:
    """A GATEWAY_CONFIG file declaring the Azure storages of `settings`, for the CLI."""
    lines = [f'default_storage = "{settings.default_storage}"']
    for config in settings.extra_storages:
        if config.type == "azure":
            lines += [f"[storages.{config.name}]", 'type = "azure"',
                      f'endpoint = "{config.endpoint}"', f'container = "{config.bucket}"',
                      f'account_name = "{config.account_name}"',
                      f'account_key = "{config.account_key}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def azure_env(endpoint: str, directory: Path) -> tuple[dict[str, str], int]:
    """Settings for a `gateway serve` whose new recordings go to a fresh container on
    Azurite (a named storage `azure`, from a GATEWAY_CONFIG file), and Azurite's port."""
    from azure.storage.blob import BlobServiceClient

    from tests.conftest import AZURITE_KEY, azure_settings

    container = f"rec-{os.urandom(8).hex()}"
    BlobServiceClient(endpoint, credential={"account_name": ACCOUNT, "account_key": AZURITE_KEY}
                      ).create_container(container)
    directory.mkdir(parents=True, exist_ok=True)
    settings = azure_settings(Settings(data_dir=directory, signing_keys=(b"unused" * 8,)),
                              endpoint, container)
    config = write_config(directory / "gateway.toml", settings)
    port = URL(endpoint).port
    assert port is not None
    return {"GATEWAY_CONFIG": str(config)}, port
