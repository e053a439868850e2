"""A real AWS-protocol server for the tests: ``moto_server`` (S3, SQS, ...) on a free loopback port.

The server runs as a subprocess for the whole test session (one per xdist worker) and is stopped at the end.
boto3, GDAL (``/vsis3/``) and Snakemake's S3 storage plugin all talk to it over HTTP; nothing is monkeypatched.

Use it from a test module by importing the fixtures::

    from moto_server import moto_endpoint, moto_server  # noqa: F401  (pytest fixtures)

    def test_something(moto_endpoint):          # "http://127.0.0.1:PORT"
        ...

While the fixture is active, ``os.environ`` holds fake credentials, the region and the endpoint (for boto3 and GDAL),
so subprocesses started with ``env=os.environ`` (or :meth:`MotoServer.env`) reach the server and nothing else: the
user's ``~/.aws`` files are hidden. Every HTTP request the server answers is in its access log
(:meth:`MotoServer.requests`), which tests use to count S3 calls.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

#: fake credentials; the secret is distinctive so tests can grep outputs and logs for leaks
ACCESS_KEY = "EOSTATSTESTACCESSKEY"
SECRET_KEY = "eostats-test-secret-Zq8vX3kP0wLmN7rT"
REGION = "us-east-1"

MOTO_SERVER = Path(sys.executable).parent / "moto_server"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# werkzeug's access log line: 127.0.0.1 - - [date] "HEAD /bucket/key?x=y HTTP/1.1" 404 -
_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


@dataclass(frozen=True)
class LoggedRequest:
    """One request the server answered (path-style S3: ``/bucket/key``)."""

    method: str
    target: str  # path plus query string, as sent
    status: int

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""


class MotoServer:
    """A running ``moto_server`` subprocess and its access log."""

    def __init__(self, process: subprocess.Popen, port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a client process: credentials, region, endpoint for boto3 and for GDAL's /vsis3/."""
        env = dict(os.environ if base is None else base)
        env.update(client_environment(self.endpoint))
        return env

    def requests(self, since: int = 0) -> list[LoggedRequest]:
        """Requests answered so far (``since``: skip that many, e.g. a count taken earlier), moto's own API excluded."""
        # werkzeug writes the line after the response; give the last one a moment to reach the file
        time.sleep(0.2)
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            match = _ACCESS.search(_ANSI.sub("", line))
            if match and not match["target"].startswith("/moto-api"):
                found.append(LoggedRequest(match["method"], match["target"], int(match["status"])))
        return found[since:]

    def reset(self) -> None:
        """Forget every bucket, object and queue (moto's reset API)."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def client_environment(endpoint: str) -> dict[str, str]:
    """Variables that point boto3 and GDAL at ``endpoint`` with the fake credentials (and at nothing else)."""
    host = endpoint.split("://", 1)[1].rstrip("/")
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,  # boto3 >= 1.28
        # the user's own AWS files must not leak into the tests
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        # GDAL's /vsis3/: a plain-HTTP, path-style endpoint
        "AWS_S3_ENDPOINT": host,
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/moto-api/data.json", timeout=2
        ) as resp:
            return resp.status == 200
    except OSError:
        return False


def start_moto_server(log_path: Path, timeout_s: float = 30.0) -> MotoServer:
    """Start ``moto_server`` on a free loopback port; its access log goes to ``log_path``."""
    last_error = ""
    for _attempt in range(3):  # another process may grab the port between probing and binding
        port = _free_port()
        log = open(log_path, "ab")  # noqa: SIM115 - the server process owns it until it exits
        process = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and process.poll() is None:
            if _ready(port):
                return MotoServer(process, port, log_path)
            time.sleep(0.1)
        last_error = log_path.read_text(errors="replace")[-2000:]
        MotoServer(process, port, log_path).stop()
    raise RuntimeError(f"moto_server did not start: {last_error}")


@contextlib.contextmanager
def _patched_environ(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A moto server for the session; ``os.environ`` points boto3 and GDAL at it while it runs."""
    log_path = tmp_path_factory.mktemp("moto") / "access.log"
    server = start_moto_server(log_path)
    try:
        with _patched_environ(client_environment(server.endpoint)):
            yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_endpoint(moto_server: MotoServer) -> str:
    """URL of the session's moto server, e.g. ``http://127.0.0.1:PORT``."""
    return moto_server.endpoint
