"""Fixtures: a real gateway on 127.0.0.1 with its own data dir, keys and recordings."""

from __future__ import annotations

import io
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner
from moto.server import ThreadedMotoServer

from gateway import server
from gateway.access_log import AccessLogger
from gateway.app import create_app
from gateway.appkeys import CATALOG, SETTINGS
from gateway.auth import generate_api_key
from gateway.demo import tone_wav
from gateway.models import Clock, Principal, Role, system_clock
from gateway.settings import Settings
from gateway.storage.config import StorageConfig, storage_from_table
from tests.postgres_server import PostgresServer, find_bindir
from tests.storage_probe import StorageProbe, default_probe, s3_client

SIGNING_KEY = b"test-signing-key-0123456789abcdef0123456789"

AiohttpClient = Callable[[web.Application | TestServer], Awaitable[TestClient[Any, Any]]]


@pytest.fixture(autouse=True)
def _no_ambient_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """botocore reads AWS_* and ~/.aws; tests see only what they configure."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 in server mode: real HTTP on 127.0.0.1 (the decorator cannot see aiohttp)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(moto_endpoint: str) -> str:
    bucket = f"rec-{uuid.uuid4().hex[:16]}"
    s3_client(moto_endpoint).create_bucket(Bucket=bucket)
    return bucket


def s3_settings(base: Settings, endpoint: str, bucket: str) -> Settings:
    return base.with_changes(
        storage_backend="s3", s3_endpoint=endpoint, s3_bucket=bucket,
        aws_access_key_id="testing", aws_secret_access_key="testing",
        s3_part_size=5 * 1024 * 1024, storage_timeout=5.0,
    )


AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
               "K1SZFPTOtr/KBHBeksoGMGw==")
"""Azurite's well-known development account and key, published in its documentation."""


@pytest.fixture(scope="session")
def azurite_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Azurite's blob service on 127.0.0.1, on a port the system chose; stopped at the end."""
    from tests.azurite import run_azurite

    with run_azurite(tmp_path_factory.mktemp("azurite")) as endpoint:
        yield endpoint


@pytest.fixture
def azure_container(azurite_endpoint: str) -> str:
    from azure.storage.blob import BlobServiceClient

    container = f"rec-{uuid.uuid4().hex[:16]}"
    BlobServiceClient(azurite_endpoint, credential={
        "account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY,
    }).create_container(container)
    return container


def azure_config(endpoint: str, container: str, name: str = "azure",
                 **table: Any) -> StorageConfig:
    """A named Azure storage on Azurite, read from its TOML table as a deployment's would be."""
    return storage_from_table(name, {
        "type": "azure", "endpoint": endpoint, "container": container,
        "account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY, **table})


def azure_settings(base: Settings, endpoint: str, container: str) -> Settings:
    """New recordings go to the named storage `azure` (the environment's stays local)."""
    return base.with_changes(
        extra_storages=(azure_config(endpoint, container),), default_storage="azure",
        s3_part_size=5 * 1024 * 1024, storage_timeout=5.0,
    )


@pytest.fixture(scope="session")
def gcs_service_key() -> str:
    """The private key of the tests' throwaway service account (RSA, made here)."""
    from tests.gcs_emulator import new_private_key

    return new_private_key()


@pytest.fixture(scope="session")
def gcs_token_endpoint(gcs_service_key: str) -> Iterator[Any]:
    """An OAuth token endpoint that knows only the tests' service account key."""
    from tests.gcs_emulator import TokenEndpoint

    endpoint = TokenEndpoint(gcs_service_key)
    endpoint.start()
    yield endpoint
    endpoint.stop()


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    """fake-gcs-server on 127.0.0.1 (a free port), for the whole session."""
    try:
        from tests.gcs_emulator import FakeGcs, emulator_binary

        emulator_binary()
    except (ImportError, RuntimeError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the GCS emulator is missing ({exc}); .ci/run installs it")
        pytest.skip(f"the GCS emulator is not installed ({exc})")
    emulator = FakeGcs()
    emulator.start()
    yield emulator.url
    emulator.stop()


@pytest.fixture
def gcs_bucket(gcs_endpoint: str) -> str:
    from tests.gcs_emulator import create_bucket

    bucket = f"rec-{uuid.uuid4().hex[:16]}"
    create_bucket(gcs_endpoint, bucket)
    return bucket


@pytest.fixture
def gcs_credentials(gcs_service_key: str, gcs_token_endpoint: Any) -> str:
    """The service account's JSON key, as Stream and Google hand it out."""
    from tests.gcs_emulator import service_account

    return service_account(gcs_service_key, gcs_token_endpoint.url).json


def gcs_settings(base: Settings, endpoint: str, bucket: str, credentials: str) -> Settings:
    return base.with_changes(
        storage_backend="gcs", gcs_endpoint=endpoint, gcs_bucket=bucket,
        gcs_credentials=credentials, s3_part_size=5 * 1024 * 1024, storage_timeout=5.0,
    )


gcs_only = pytest.mark.parametrize("backend", ["gcs"])
local_only = pytest.mark.parametrize("backend", ["local"])
"""For tests about local files themselves (descriptors, directories)."""
s3_only = pytest.mark.parametrize("backend", ["s3"])
azure_only = pytest.mark.parametrize("backend", ["azure"])


@pytest.fixture(params=["local", "s3", "gcs", "azure"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every test that takes a gateway runs once per storage backend."""
    value: str = request.param
    return value


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster for the session. Skipped only where Debian's
    PostgreSQL is not installed and CI is unset: in CI its absence fails the tests."""
    bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL is not installed (.ci/run installs Debian's postgresql)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    cluster = PostgresServer(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def catalog() -> str:
    """The embedded catalog of the `settings` fixture; `both_catalogs` runs a test on each."""
    return "sqlite"


both_catalogs = pytest.mark.both_catalogs
"""For the tests of catalog behaviour: those that take a gateway run on SQLite and on
PostgreSQL (PostgreSQL with local storage only: the storage backends have their own
runs, and the catalog does not depend on them)."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_catalogs: run on SQLite and PostgreSQL catalogs")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("both_catalogs") and \
            "catalog" in metafunc.fixturenames:
        metafunc.parametrize("catalog", ["sqlite", "postgres"])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # PostgreSQL x an object storage would repeat PostgreSQL x local: the same catalog
    # calls. Tests that ask for a storage themselves (s3_only, gcs_only) keep it.
    def redundant(item: pytest.Item) -> bool:
        params = getattr(item, "callspec", None)
        explicit = any(m.args and m.args[0] == "backend"
                       for m in item.iter_markers("parametrize"))
        return (params is not None and params.params.get("catalog") == "postgres"
                and params.params.get("backend") not in (None, "local") and not explicit)

    dropped = [item for item in items if redundant(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not redundant(item)]


def postgres_settings(base: Settings, cluster: PostgresServer) -> Settings:
    """`base` on a fresh database of the test cluster, migrated as the gateway starts."""
    return base.with_changes(catalog="postgres", database_url=cluster.new_database(),
                             database_pool_size=2, database_migrate=True)


def catalog_env(settings: Settings) -> dict[str, str]:
    """The variables that point a `gateway` command at the catalog of `settings`."""
    if settings.catalog != "postgres":
        return {}
    return {"GATEWAY_CATALOG": "postgres", "GATEWAY_DATABASE_URL": settings.database_url,
            "GATEWAY_SIGNING_KEY": SIGNING_KEY.decode()}


@pytest.fixture
def settings(tmp_path: Path, backend: str, catalog: str,
             request: pytest.FixtureRequest) -> Settings:
    # Tests fail authentication on purpose, many times, from 127.0.0.1; the limit of
    # failed attempts has its own tests.
    base = Settings(data_dir=tmp_path / "data", signing_keys=(SIGNING_KEY,),
                    local_storage_fsync=False, cache_ttl=5.0, auth_failure_burst=100_000)
    if catalog == "postgres":
        base = postgres_settings(base, request.getfixturevalue("postgres"))
    if backend == "local":
        return base
    if backend == "azure":
        return azure_settings(base, request.getfixturevalue("azurite_endpoint"),
                              request.getfixturevalue("azure_container"))
    if backend == "gcs":
        return gcs_settings(base, request.getfixturevalue("gcs_endpoint"),
                            request.getfixturevalue("gcs_bucket"),
                            request.getfixturevalue("gcs_credentials"))
    return s3_settings(base, request.getfixturevalue("moto_endpoint"),
                       request.getfixturevalue("s3_bucket"))


@dataclass
class Gateway:
    """A running gateway and the keys of a few users, for tests to talk to."""

    client: TestClient[Any, Any]
    app: web.Application
    settings: Settings
    keys: dict[str, str]
    probe: StorageProbe

    @property
    def backend(self) -> str:
        return self.probe.backend

    def h(self, who: str = "alice") -> dict[str, str]:
        """Headers authenticating as one of the fixture's users."""
        return {"X-API-Key": self.keys[who]}

    async def add_key(self, name: str, user_id: int, role: Role, tenant: str = "default") -> str:
        key = generate_api_key()
        await self.app[CATALOG].add_api_key(key.key_hash, key.prefix,
                                            Principal(user_id, tenant, role))
        self.keys[name] = key.key
        return key.key

    async def create_recording(self, who: str = "alice", **fields: Any) -> dict[str, Any]:
        async with self.client.post("/recordings", json=fields, headers=self.h(who)) as resp:
            assert resp.status == 201, await resp.text()
            body: dict[str, Any] = await resp.json()
            return body

    async def upload(
        self, recording_id: int, data: bytes, fmt: str = "wav", media_type: str = "audio",
        who: str = "alice",
    ) -> dict[str, Any]:
        async with self.client.post(
            f"/recordings/{recording_id}/media", params={"type": media_type, "format": fmt},
            data=io.BytesIO(data), headers=self.h(who),
        ) as resp:
            assert resp.status == 201, await resp.text()
            body: dict[str, Any] = await resp.json()
            return body

    async def recording_with_media(
        self, data: bytes, fmt: str = "wav", who: str = "alice"
    ) -> tuple[int, int]:
        recording = await self.create_recording(who)
        media = await self.upload(recording["id"], data, fmt, who=who)
        return recording["id"], media["id"]

    def raw_path(self, recording_id: int, media_id: int) -> str:
        return f"/recordings/{recording_id}/media/{media_id}/raw"


class ProductionServer(TestServer):
    """aiohttp's TestServer, but with the server options `gateway serve` uses.

    TestServer cancels a handler when its client disconnects; `gateway serve` does
    not (handler_cancellation=False), it logs with the gateway's AccessLogger, and its
    connections have the header, send and keep-alive timeouts of the settings: the
    tests must see what production sees.
    """

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        kwargs["handler_cancellation"] = False
        kwargs["access_log_class"] = AccessLogger
        settings = self.app[SETTINGS]
        return server.AppRunner(self.app, header_timeout=settings.header_timeout,
                                send_timeout=settings.send_timeout,
                                keepalive_timeout=settings.keepalive_timeout, **kwargs)


async def start_gateway(
    aiohttp_client: AiohttpClient, settings: Settings, *, cancel_on_disconnect: bool = False,
    clock: Clock = system_clock,
) -> Gateway:
    """A gateway on 127.0.0.1; `cancel_on_disconnect` cancels handlers whose client left."""
    app = create_app(settings, clock=clock)
    server = TestServer(app) if cancel_on_disconnect else ProductionServer(app)
    client = await aiohttp_client(server)
    gateway = Gateway(client, app, settings, {}, default_probe(settings))
    await gateway.add_key("alice", 1, Role.RECORDER)
    await gateway.add_key("bob", 2, Role.RECORDER)
    await gateway.add_key("viewer", 3, Role.VIEWER)
    await gateway.add_key("admin", 4, Role.ADMIN)
    await gateway.add_key("mallory", 5, Role.ADMIN, tenant="other")
    return gateway


@pytest.fixture
async def gw(aiohttp_client: AiohttpClient, settings: Settings) -> Gateway:
    return await start_gateway(aiohttp_client, settings)


@pytest.fixture(scope="session")
def wav_bytes() -> bytes:
    """Four seconds of generated tone as a real WAV file."""
    return tone_wav(seconds=4.0, sample_rate=8000)


@pytest.fixture(scope="session")
def blob() -> bytes:
    """Incompressible bytes with a recognisable value at every offset."""
    return os.urandom(300_000)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
