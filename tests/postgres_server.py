"""A throwaway PostgreSQL cluster from Debian's packages, on 127.0.0.1 and a free port.

initdb makes it in a temporary directory, which also holds its unix socket; it is
stopped and removed at the end. PostgreSQL refuses to run as root: as root, its
commands run as the `postgres` user the Debian package creates, in a directory
owned by that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from tests.gateway_process import free_port

SUPERUSER = "gateway_test"
PASSWORD = "pg-Secret-9d1f0c"
"""The superuser's password: tests look for it in every output, where it must not be."""


def find_bindir() -> Path | None:
    """Where initdb and pg_ctl are: pg_config's answer, else the newest Debian version."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            bindir = Path(subprocess.run([pg_config, "--bindir"], capture_output=True,
                                         text=True, check=True).stdout.strip())
        except (subprocess.CalledProcessError, OSError):
            bindir = Path()
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """A running cluster; `url(db)` is how the gateway reaches one of its databases."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)

    def _run(self, args: Sequence[str], **kwargs: object) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        subprocess.run([*prefix, *args], check=True, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=120, **kwargs)  # type: ignore[call-overload]

    def start(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                   f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8",
                   "--locale=C.UTF-8", "--no-sync"])
        pwfile.unlink()
        # Durability is not under test: without fsync the suite runs faster and does
        # not compete with other work for the disk.
        options = (f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                   "-c shared_buffers=32MB")
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                   str(self.root / "server.log"), "-o", options, "-w", "-t", "60", "start"])

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh empty database; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-c", sql, self.url(database)],
            check=True, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        return result.stdout.strip()

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                           "-w", "-t", "60", "stop"])
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
