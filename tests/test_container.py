"""The image and the compose stack, checked without a Docker engine.

No engine runs where the tests do, so the image is never built here. Instead: the
compose file is read and held against the settings the gateway really reads and
against the Dockerfile; and the Dockerfile's own build and install steps are
replayed in a shell (the build context filtered by .dockerignore, the wheel built
as the build stage builds it, installed into a fresh virtual environment away from
the sources), then `gateway serve` runs from that environment with the image's ENV
and is probed with the exact command of its HEALTHCHECK.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.settings import VARIABLES, load_settings
from tests.dockerfile import (
    DockerIgnore,
    RootMirror,
    Stage,
    build_context,
    copy_into,
    env_pairs,
    expand,
    interpolate,
    parse_dockerfile,
)

REPO = Path(__file__).parent.parent
COMPOSE = REPO / "config" / "compose.yaml"
GATEWAY_VARIABLES = {v.name for v in VARIABLES}


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile((REPO / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as `docker compose` sees it with no .env: every default used."""
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    resolved: dict[str, Any] = interpolate(loaded, {})
    return resolved


def image_env(stage: Stage, base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    for instruction in stage.all("ENV"):
        for name, value in env_pairs(instruction):
            env[name] = expand(value, env)
    return env


class TestDockerfile:
    def test_two_stages_on_one_pinned_slim_base(self, stages: list[Stage]) -> None:
        build, runtime = stages
        assert build.name == "build" and runtime.name is None
        # The virtual environment moves between stages: its interpreter links need
        # the same Python at the same place.
        assert build.base == runtime.base
        match = re.fullmatch(r"python:(\d+)\.(\d+)-slim-(\w+)", runtime.base)
        assert match, f"base image {runtime.base} is not a pinned python slim image"
        requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
            "requires-python"]
        assert requires == ">=3.11" and (int(match[1]), int(match[2])) >= (3, 11)

    def test_runtime_stage_gets_only_the_environment(self, stages: list[Stage]) -> None:
        runtime = stages[1]
        copies = runtime.all("COPY")
        assert [c.flags for c in copies] == [{"from": "build"}]
        assert copies[0].args.split() == ["/opt/venv", "/opt/venv"]
        commands = " ".join(r.args for r in runtime.all("RUN"))
        for tool in ("pip", "apt-get", "gcc", "build-essential", "wheel"):
            assert tool not in commands

    def test_non_root_user_owns_the_data_volume(self, stages: list[Stage]) -> None:
        runtime = stages[1]
        env = image_env(runtime, {})
        user = runtime.one("USER").args
        uid, _, gid = user.partition(":")
        assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
        setup = runtime.one("RUN").args
        assert f"--uid {uid}" in setup and f"--gid {gid}" in setup
        assert f"chown gateway:gateway {env['GATEWAY_DATA_DIR']}" in setup
        assert runtime.one("VOLUME").exec_form == [env["GATEWAY_DATA_DIR"]]
        assert env["LOCAL_STORAGE_DIR"].startswith(env["GATEWAY_DATA_DIR"] + "/")

    def test_environment_and_port(self, stages: list[Stage]) -> None:
        env = image_env(stages[1], {"PATH": "/usr/bin"})
        assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
        assert env["PATH"] == "/opt/venv/bin:/usr/bin"
        assert env["GATEWAY_HOST"] == "0.0.0.0"  # noqa: S104 (inside a container)
        assert stages[1].one("EXPOSE").args == env["GATEWAY_PORT"]
        gateway_names = {n for n in env if n.startswith(("GATEWAY_", "STORAGE_", "LOCAL_"))}
        assert gateway_names <= GATEWAY_VARIABLES
        assert stages[1].one("CMD").exec_form == ["gateway", "serve"]

    def test_healthcheck_probes_healthz(self, stages: list[Stage]) -> None:
        check = stages[1].one("HEALTHCHECK")
        assert check.args.startswith("CMD ")
        command = check.exec_form
        assert command is not None and command[:2] == ["python", "-c"]
        assert "/healthz" in command[2] and "GATEWAY_PORT" in command[2]
        assert set(check.flags) >= {"interval", "timeout", "start-period"}

    def test_dockerignore_keeps_the_context_to_the_copied_files(self) -> None:
        ignore = DockerIgnore.parse((REPO / ".dockerignore").read_text())
        for kept in ("pyproject.toml", "README.md", "gateway/app.py", "gateway/client/http.py"):
            assert not ignore.excludes(kept), kept
        for left_out in (".git", ".venv/bin/python", "data/catalog.sqlite3", "tests/conftest.py",
                         "gateway/__pycache__/app.cpython-311.pyc",
                         "examples/nextjs/node_modules/next/package.json"):
            assert ignore.excludes(left_out), left_out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run(command: list[str], *, env: dict[str, str], cwd: Path,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def test_image_build_and_install_steps_replayed_in_a_shell(
    stages: list[Stage], tmp_path: Path
) -> None:
    build, runtime = stages
    image = RootMirror(tmp_path / "image")
    image.root.mkdir()
    context = tmp_path / "context"
    sent = build_context(REPO, DockerIgnore.parse((REPO / ".dockerignore").read_text()),
                         context)
    assert "pyproject.toml" in sent and "gateway/cli.py" in sent
    assert not [p for p in sent if p.startswith((".venv/", ".git/", "tests/", "data/"))]

    # `python` is the image's interpreter; here, this one (the same minor version).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    host = {k: v for k, v in os.environ.items()
            if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env = {**host, "PATH": f"{bin_dir}:{host.get('PATH', '/usr/bin:/bin')}"}
    workdir = image.root
    for step in build.instructions:
        if step.keyword == "ENV":
            env.update((name, expand(value, env)) for name, value in env_pairs(step))
        elif step.keyword == "WORKDIR":
            workdir = image.path(step.args)
            workdir.mkdir(parents=True, exist_ok=True)
        elif step.keyword == "COPY":
            *sources, destination = step.args.split()
            target = workdir / destination if not destination.startswith("/") \
                else image.path(destination)
            copy_into(context, sources, target, destination.endswith("/"))
        elif step.keyword == "RUN":
            done = run(["sh", "-c", image.translate(step.args)], env=env, cwd=workdir)
            assert done.returncode == 0, f"RUN {step.args}\n{done.stdout}\n{done.stderr}"
        else:
            raise AssertionError(f"the replay does not know {step.keyword} yet")
    wheels = list(image.path("/wheels").glob("recordings_gateway-*.whl"))
    assert len(wheels) == 1

    # The runtime stage: its ENV (data paths below the mirror), its command, its probe.
    # Servers here listen on 127.0.0.1 only, where the image listens on 0.0.0.0.
    port = free_port()
    runtime_env = image_env(runtime, {})  # $PATH is the base image's: empty here
    assert runtime_env["PATH"].endswith(":")
    serve_env = {**host, **{name: image.translate(value) for name, value in
                            runtime_env.items()}}
    serve_env["PATH"] += host["PATH"]
    serve_env.update(GATEWAY_HOST="127.0.0.1", GATEWAY_PORT=str(port))
    Path(serve_env["GATEWAY_DATA_DIR"]).mkdir()  # as the runtime stage's RUN does
    located = run(["python", "-c", "import gateway; print(gateway.__file__)"],
                  env=serve_env, cwd=image.root)
    assert located.stdout.startswith(str(image.path("/opt/venv/lib"))), located

    healthcheck = runtime.one("HEALTHCHECK").exec_form
    assert healthcheck is not None
    command = runtime.one("CMD").exec_form
    assert command is not None
    server = subprocess.Popen(command, env=serve_env, cwd=image.root, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60  # a start period, as Docker grants one
        while (probe := run(healthcheck, env=serve_env, cwd=image.root)).returncode != 0:
            assert server.poll() is None, "gateway serve exited"
            assert time.monotonic() < deadline, probe.stderr
            time.sleep(0.2)
        # The command-line tools of the image work too: a key, then the client.
        created = run(["gateway", "keys", "create", "--user-id", "1"], env=serve_env,
                      cwd=image.root)
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]
        listed = run(["gateway", "recordings", "list", "--json"],
                     env={**serve_env, "GATEWAY_API_KEY": key}, cwd=image.root)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.startswith('{\n  "recordings": []')
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=20)
        finally:
            server.kill()
            output = server.communicate()[0]
    assert code == 0, output
    # The probe fails once nothing answers: it checks, it does not just run.
    assert run(healthcheck, env=serve_env, cwd=image.root).returncode != 0


class TestCompose:
    def test_services(self, compose: dict[str, Any]) -> None:
        assert set(compose["services"]) == {"minio", "minio-init", "gateway"}
        assert set(compose["volumes"]) == {"minio-data", "gateway-data"}
        for name, service in compose["services"].items():
            if "image" in service and name != "gateway":
                tag = service["image"].partition(":")[2]
                assert tag.startswith("RELEASE."), f"{name}: pin the image, not {tag!r}"

    def test_gateway_builds_this_repository(self, compose: dict[str, Any]) -> None:
        build = compose["services"]["gateway"]["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == REPO.resolve() and (context / build["dockerfile"]).is_file()

    def test_gateway_variables_are_read_and_valid(
        self, compose: dict[str, Any], tmp_path: Path
    ) -> None:
        env = {k: str(v) for k, v in compose["services"]["gateway"]["environment"].items()}
        assert set(env) <= GATEWAY_VARIABLES, set(env) - GATEWAY_VARIABLES
        assert env["STORAGE_BACKEND"] == "minio" and env["MINIO_SECURE"] == "false"
        settings = load_settings({**env, "GATEWAY_DATA_DIR": str(tmp_path / "data")})
        storage = settings.env_storage()
        assert (storage.type, storage.endpoint) == ("minio", "http://minio:9000")
        assert storage.public_endpoint == "http://localhost:9000"

    def test_minio_credentials_bucket_and_ports_agree(self, compose: dict[str, Any]) -> None:
        services = compose["services"]
        gateway, minio, init = services["gateway"], services["minio"], services["minio-init"]
        env = gateway["environment"]
        assert minio["environment"]["MINIO_ROOT_USER"] == env["MINIO_ACCESS_KEY"]
        assert minio["environment"]["MINIO_ROOT_PASSWORD"] == env["MINIO_SECRET_KEY"]
        assert len(env["MINIO_SECRET_KEY"]) >= 8  # MinIO refuses a shorter root password
        for name in ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "MINIO_BUCKET"):
            assert init["environment"][name] == env[name]
        script = init["command"][0]
        assert f"mc alias set local http://{env['MINIO_ENDPOINT']} " in script
        assert 'mc mb --ignore-existing "local/$MINIO_BUCKET"' in script  # $$ → $
        host, _, port = env["MINIO_ENDPOINT"].partition(":")
        assert host == "minio" and "--address" not in minio["command"] and port == "9000"
        published = {p.rsplit(":", 2)[-2]: p.rsplit(":", 1)[-1] for p in minio["ports"]}
        assert published[env["MINIO_PUBLIC_ENDPOINT"].rpartition(":")[2]] == port

    def test_gateway_port_volume_and_healthcheck(
        self, compose: dict[str, Any], stages: list[Stage]
    ) -> None:
        gateway = compose["services"]["gateway"]
        env = gateway["environment"]
        image = image_env(stages[1], {})
        assert gateway["ports"] == [f"{image['GATEWAY_PORT']}:{env['GATEWAY_PORT']}"]
        assert env["GATEWAY_PORT"] == image["GATEWAY_PORT"]
        assert gateway["volumes"] == [f"gateway-data:{env['GATEWAY_DATA_DIR']}"]
        assert env["GATEWAY_DATA_DIR"] == image["GATEWAY_DATA_DIR"]
        probe = stages[1].one("HEALTHCHECK").exec_form
        assert probe is not None and gateway["healthcheck"]["test"] == ["CMD", *probe]
        assert compose["services"]["minio"]["healthcheck"]["test"] == ["CMD", "mc", "ready",
                                                                      "local"]
        assert compose["services"]["minio"]["volumes"] == ["minio-data:/data"]
        assert gateway["read_only"] is True and gateway["cap_drop"] == ["ALL"]

    def test_start_order(self, compose: dict[str, Any]) -> None:
        services = compose["services"]
        assert services["gateway"]["depends_on"] == {
            "minio": {"condition": "service_healthy"},
            "minio-init": {"condition": "service_completed_successfully"},
        }
        assert services["minio-init"]["depends_on"] == {
            "minio": {"condition": "service_healthy"}}
        assert services["minio-init"]["restart"] == "no"

    def test_every_variable_has_a_default(self) -> None:
        """`up` works without a .env file: no `${VAR}` is left empty but the signing key,
        which the gateway then generates into its volume."""
        raw = COMPOSE.read_text()
        for name, default in re.findall(r"\$\{(\w+)(?::-([^}]*))?\}", raw):
            assert default or name == "GATEWAY_SIGNING_KEY", name
