"""A real PostgreSQL server for the datacube tests, started in a temporary directory and stopped at the end.

The server comes from Debian's ``postgresql`` package (``envs/apt-packages.txt``). It listens on a Unix socket in
its own directory only (no TCP port), with durability switched off (``fsync=off``): it lives for one test session.
PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` OS user and every server
command runs through ``runuser -u postgres --``; as another user it runs as that user.

``datacube system init`` runs once, into a template database; each test that wants an empty index gets a copy of it
(``CREATE DATABASE ... TEMPLATE``, a fraction of a second) instead of paying the ten seconds of ``system init``.

Use it from a test module by importing the fixtures::

    from postgres import datacube_index, postgres_server  # noqa: F401  (pytest fixtures)

    pytestmark = pytest.mark.xdist_group("postgres")

    def test_something(datacube_index):   # a DatacubeIndex: .db_url, .env (environment variables), .datacube()
        ...

Without the server binaries the fixtures skip with the reason and the command that installs them.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: datacube's command line in the test environment
DATACUBE = str(Path(sys.executable).parent / "datacube")
_PORT = 54329  # only names the socket file: the server opens no TCP port
_counter = itertools.count(1)


def server_binaries() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``: Debian's newest version, else ``$PATH``."""
    debian = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if debian:
        return Path(debian[-1]).parent
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    return None


def _missing_reason() -> str | None:
    if server_binaries() is None:
        return (
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's 'postgresql' package "
            "as root (apt-get install postgresql; 'make install' does it from envs/apt-packages.txt)"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root but there is no 'postgres' OS user to own the test cluster"
        if shutil.which("runuser") is None:
            return "running as root but 'runuser' (util-linux) is missing"
    return None


@dataclass
class PostgresServer:
    """A running cluster: ``socket_dir`` is its host, ``user`` its superuser."""

    root: Path
    bindir: Path
    user: str = "postgres"
    port: int = _PORT
    as_postgres: bool = field(default=False)

    @property
    def socket_dir(self) -> Path:
        return self.root

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def _cmd(self, *args: str) -> list[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        return [*prefix, *args]

    def run(self, *args: str) -> subprocess.CompletedProcess:
        """Run a server binary (as the cluster's OS user); raises with its output on failure."""
        cmd = self._cmd(str(self.bindir / args[0]), *args[1:])
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def url(self, database: str) -> str:
        """SQLAlchemy URL of ``database`` over the Unix socket (the form datacube's ``db_url`` takes)."""
        return (
            f"postgresql+psycopg2://{self.user}@/{database}?host={self.socket_dir}&port={self.port}"
        )

    def psql(self, sql: str, database: str = "postgres") -> str:
        client = shutil.which("psql") or str(self.bindir / "psql")
        cmd = [client, "-X", "-q", "-At", "-h", str(self.socket_dir), "-p", str(self.port)]
        cmd += ["-U", self.user, "-d", database, "-c", sql]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {done.stderr}")
        return done.stdout

    def create_database(self, name: str, template: str | None = None) -> str:
        clause = f" TEMPLATE {template}" if template else ""
        self.psql(f'CREATE DATABASE "{name}"{clause}')
        return name

    def start(self) -> None:
        if self.as_postgres:
            shutil.chown(self.root, user="postgres")
        self.run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-A",
            "trust",
            "-U",
            self.user,
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        options = (
            f"-k {self.socket_dir} -p {self.port} -c listen_addresses='' -F "
            "-c full_page_writes=off -c synchronous_commit=off -c max_connections=50"
        )
        self.run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-o",
            options,
            "start",
        )

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass(frozen=True)
class DatacubeIndex:
    """An initialised, empty datacube index in its own database."""

    server: PostgresServer
    database: str

    @property
    def db_url(self) -> str:
        return self.server.url(self.database)

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that make this index datacube's default environment (``datacube`` CLI too)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ODC_", "DATACUBE_"))}
        env["ODC_DEFAULT_DB_URL"] = self.db_url
        env["ODC_DEFAULT_INDEX_DRIVER"] = "postgres"
        return env

    def raw_config(self) -> dict:
        return {"default": {"index_driver": "postgres", "db_url": self.db_url}}

    def datacube(self, app: str = "eostats-tests"):
        from datacube import Datacube

        return Datacube(raw_config=self.raw_config(), env="default", app=app)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """``datacube ARGS`` against this index; raises with its output on failure."""
        done = subprocess.run(
            [DATACUBE, *args], capture_output=True, text=True, env=self.env, timeout=300
        )
        if done.returncode != 0:
            raise RuntimeError(f"datacube {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for the session with a ``datacube system init``-ed template database."""
    reason = _missing_reason()
    if reason:
        pytest.skip(reason)
    bindir = server_binaries()
    assert bindir is not None
    root = Path(
        tempfile.mkdtemp(prefix="eostats-pg-", dir="/tmp")
    )  # short: the socket path has a limit
    server = PostgresServer(root=root, bindir=bindir, as_postgres=os.geteuid() == 0)
    try:
        server.start()
        server.create_database("dc_template")
        template = DatacubeIndex(server, "dc_template")
        template.cli("system", "init")
        server.psql("UPDATE pg_database SET datistemplate = true WHERE datname = 'dc_template'")
        yield server
    finally:
        server.stop()


def new_index(server: PostgresServer) -> DatacubeIndex:
    """A fresh, initialised, empty datacube index (a copy of the template database)."""
    name = f"dc_{os.getpid()}_{next(_counter)}"
    server.create_database(name, template="dc_template")
    return DatacubeIndex(server, name)


def add_to_index(
    index: DatacubeIndex, products: dict, documents: list, uri: str = "file:///nowhere/"
) -> None:
    """Add product definitions and eo3 dataset documents through datacube's Python API (what ``datacube dataset
    add`` does, without a process start per call). Each dataset's location is ``uri + label + .odc-metadata.yaml``."""
    from datacube.index.hl import Doc2Dataset

    dc = index.datacube()
    try:
        for definition in products.values():
            dc.index.products.add_document(definition)
        resolve = Doc2Dataset(dc.index, verify_lineage=False)
        for doc in documents:
            dataset, error = resolve(doc, f"{uri}{doc.get('label') or doc['id']}.odc-metadata.yaml")
            if error:
                raise RuntimeError(f"cannot index {doc['id']}: {error}")
            dc.index.datasets.add(dataset, with_lineage=False)
    finally:
        dc.close()


@pytest.fixture
def datacube_index(postgres_server: PostgresServer) -> DatacubeIndex:
    """A fresh, initialised, empty datacube index (a copy of the template database)."""
    return new_index(postgres_server)
