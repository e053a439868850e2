"""A stand-in Kubernetes API server on loopback, for testing Snakemake's Kubernetes executor without a cluster.

It answers exactly the calls ``snakemake-executor-plugin-kubernetes`` 0.5 makes (read from its source):

- ``POST   /api/v1/namespaces/{ns}/secrets``                      per-run Secret with the jobs' environment
- ``POST   /apis/batch/v1/namespaces/{ns}/jobs``                  one Job per Snakemake job (or group)
- ``GET    /apis/batch/v1/namespaces/{ns}/jobs/{name}/status``    polling
- ``GET    /api/v1/namespaces/{ns}/pods?labelSelector=job-name=X`` the Job's pod and its container's exit code
- ``GET    /api/v1/namespaces/{ns}/pods/{pod}/log``               a failed pod's log
- ``DELETE`` of pods, Jobs and the Secret                           clean-up

Every request and every POSTed body is recorded. With ``run_pods=False`` Jobs stay "active" forever (the test
stops Snakemake once it has the specs it wants). With ``run_pods=True`` it also plays the kubelet: each Job's
container command runs as a local process in a fresh empty working directory (the pod's ``emptyDir`` at
``/workdir``), with the environment of ``pod_env`` (what the image and the node provide) plus the Secret's values
the container references, and the Job succeeds or fails with that process.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse


@dataclass
class PodRun:
    """One emulated pod: the container's process and its timing (seconds since the epoch)."""

    name: str
    workdir: Path
    log_path: Path
    started: float
    ended: float | None = None
    exit_code: int | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)


class FakeKubernetes:
    """The API server; use as a context manager. ``kubeconfig`` is the file to point ``KUBECONFIG`` at."""

    def __init__(
        self, root: Path, *, run_pods: bool = False, pod_env: dict[str, str] | None = None
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.run_pods = run_pods
        self.pod_env = dict(pod_env or {})
        self.requests: list[tuple[str, str]] = []
        self.jobs: list[dict[str, Any]] = []
        self.secrets: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, PodRun] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.kubeconfig = self.root / "kubeconfig.yaml"

    # -- lifecycle ---------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeKubernetes:
        self._thread.start()
        self.kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                    "current-context": "fake",
                }
            )
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        for pod in self.pods.values():
            if pod.process is not None and pod.process.poll() is None:
                pod.process.kill()
                pod.process.wait()

    def wait_for_jobs(self, count: int, timeout_s: float) -> bool:
        """Wait until at least ``count`` Jobs were created."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.jobs) >= count:
                return True
            time.sleep(0.2)
        return len(self.jobs) >= count

    # -- pods --------------------------------------------------------------------------------------------
    def _container_env(self, container: dict[str, Any]) -> dict[str, str]:
        env = {}
        for entry in container.get("env") or []:
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                data = self.secrets.get(ref["name"], {}).get("data") or {}
                env[entry["name"]] = base64.b64decode(data.get(ref["key"], "")).decode()
            elif "value" in entry:
                env[entry["name"]] = entry["value"]
        return env

    def _start_pod(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        container = job["spec"]["template"]["spec"]["containers"][0]
        workdir = self.root / "pods" / name / "workdir"
        workdir.mkdir(parents=True)
        log_path = workdir.parent / "pod.log"
        env = {**self.pod_env, **self._container_env(container)}
        pod = PodRun(name=name, workdir=workdir, log_path=log_path, started=time.time())
        with open(log_path, "wb") as log:
            pod.process = subprocess.Popen(
                [*container["command"], *container.get("args", [])],
                cwd=workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.pods[name] = pod

        def reap() -> None:
            assert pod.process is not None
            pod.exit_code = pod.process.wait()
            pod.ended = time.time()

        threading.Thread(target=reap, daemon=True).start()

    def _job_status(self, name: str) -> dict[str, Any]:
        pod = self.pods.get(name)
        if pod is None or pod.exit_code is None:
            return {"active": 1}
        return {"succeeded": 1} if pod.exit_code == 0 else {"failed": 1}

    def _pod_list(self, job_name: str) -> dict[str, Any]:
        pod = self.pods.get(job_name)
        if pod is None:
            return {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}
        state = (
            {"running": {}}
            if pod.exit_code is None
            else {"terminated": {"exitCode": pod.exit_code}}
        )
        item = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{job_name}-pod", "labels": {"job-name": job_name}},
            "status": {
                "containerStatuses": [
                    {
                        "name": "snakemake",
                        "image": "fake",
                        "imageID": "fake",
                        "ready": pod.exit_code is None,
                        "restartCount": 0,
                        "state": state,
                    }
                ]
            },
        }
        return {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [item]}

    # -- HTTP --------------------------------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet server
                pass

            def _reply(
                self, status: int, body: Any, content_type: str = "application/json"
            ) -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def _route(self, method: str) -> None:
                url = urlparse(self.path)
                parts = [unquote(p) for p in url.path.strip("/").split("/")]
                with fake._lock:
                    fake.requests.append((method, self.path))
                ok = {"apiVersion": "v1", "kind": "Status", "status": "Success"}
                if method == "POST" and parts[-1] == "secrets":
                    body = self._body()
                    fake.secrets[body["metadata"]["name"]] = body
                    return self._reply(201, body)
                if method == "POST" and parts[-1] == "jobs":
                    body = self._body()
                    with fake._lock:
                        fake.jobs.append(body)
                    if fake.run_pods:
                        fake._start_pod(body)
                    return self._reply(201, body)
                if method == "GET" and parts[-1] == "status" and "jobs" in parts:
                    name = parts[-2]
                    job = next((j for j in fake.jobs if j["metadata"]["name"] == name), None)
                    if job is None:
                        return self._reply(404, {**ok, "status": "Failure", "code": 404})
                    return self._reply(200, {**job, "status": fake._job_status(name)})
                if method == "GET" and parts[-1] == "pods":
                    selector = parse_qs(url.query).get("labelSelector", [""])[0]
                    return self._reply(200, fake._pod_list(selector.removeprefix("job-name=")))
                if method == "GET" and parts[-1] == "log":
                    job_name = parts[-2].removesuffix("-pod")
                    pod = fake.pods.get(job_name)
                    text = pod.log_path.read_text(errors="replace") if pod else ""
                    return self._reply(200, text, "text/plain")
                if method == "DELETE":
                    return self._reply(200, ok)
                return self._reply(404, {**ok, "status": "Failure", "code": 404})

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._route("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._route("POST")

            def do_DELETE(self) -> None:  # noqa: N802
                self._route("DELETE")

        return Handler
