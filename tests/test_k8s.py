"""profiles/k8s and the Dockerfile: a dry-run with no cluster, the Job specs the Kubernetes executor submits, and pods.

No cluster can run here, so the executor talks to :mod:`fake_kubernetes`, a stand-in API server on loopback
(``KUBECONFIG`` points at it), and S3 is a moto server. The specs are checked against the profile and the
workflow config, read independently here. The last test lets the stand-in play the kubelet: each Job's container
command runs as a local process in an empty working directory with the image's pip settings, so the pods really
install the storage plugin, fetch the workflow sources from S3 and run their tile jobs; it measures what a pod
costs on top of its tiles, grouped and ungrouped.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata
import io
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import boto3
import pytest
import yaml
from fake_kubernetes import FakeKubernetes
from moto_server import ACCESS_KEY, SECRET_KEY, moto_server  # noqa: F401  (fixture)

from eostats.sample import SampleSpec

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
GRID = {"crs": "EPSG:3577", "resolution": 30, "tile_size": 512, "origin": [-2688000, -5472000]}
BUCKET = "eostats-k8s-test"
PREFIX = f"s3://{BUCKET}/run"
TILE_THREADS, TILE_MEM_MB = 2, 3000
PROFILE = yaml.safe_load((REPO / "profiles" / "k8s" / "config.yaml").read_text())

pytestmark = [pytest.mark.workflow, pytest.mark.xdist_group("s3")]


# --- the image -----------------------------------------------------------------------------------------


def test_dockerfile_installs_the_lock_file_on_python_312():
    dockerfile = (REPO / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", dockerfile, flags=re.M)[1]
    assert base.startswith("python:3.12-")
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.12"
    assert "COPY requirements.lock.txt ./" in dockerfile
    assert "python -m pip install -r requirements.lock.txt" in dockerfile
    # the pods' plugin install is served from wheels of the locked versions, offline
    assert "PIP_NO_INDEX=1" in dockerfile and "PIP_FIND_LINKS=/opt/eostats/wheels" in dockerfile
    lock = (REPO / "requirements.lock.txt").read_text()
    pins = dict(
        line.split("==") for line in lock.splitlines() if "==" in line and not line.startswith("#")
    )
    if (
        "psycopg2" in pins
    ):  # no wheel: it compiles against libpq in the build stage and links it at run time
        assert "libpq-dev" in dockerfile and "libpq5" in dockerfile
    assert pins["snakemake"] == importlib.metadata.version("snakemake")
    assert pins["snakemake-storage-plugin-s3"] == importlib.metadata.version(
        "snakemake-storage-plugin-s3"
    )
    assert pins["snakemake-executor-plugin-kubernetes"] == importlib.metadata.version(
        "snakemake-executor-plugin-kubernetes"
    )


def test_profile_pins_the_image_to_the_package_version():
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    image = PROFILE["container-image"]
    assert image.rsplit(":", 1)[1] == version
    assert f"docker build -t {image} ." in (REPO / "Dockerfile").read_text()
    assert PROFILE["executor"] == "kubernetes" and PROFILE["default-storage-provider"] == "s3"
    assert (
        PROFILE["scheduler"] == "greedy" and PROFILE["retries"] >= 1 and PROFILE["rerun-incomplete"]
    )
    # the tile rule names its group; a profile `groups:` entry would override it (see the profile's comment)
    assert "groups" not in PROFILE and PROFILE["group-components"]["tiles"] > 1
    # threads and mem_mb of the steps come from the workflow config, not from the profile
    assert "set-threads" not in PROFILE and "set-resources" not in PROFILE


# --- the workflow on the stand-in cluster --------------------------------------------------------------


def copy_workflow(workdir: Path) -> None:
    """The workflow's sources under the working directory: Snakemake ships them to the pods from there."""
    shutil.copy(REPO / "Snakefile", workdir / "Snakefile")
    # not config/: its config.yaml would be merged under the test config (the Snakefile names it)
    for folder in ("rules", "scripts", "profiles"):
        shutil.copytree(
            REPO / folder, workdir / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    config = {
        "results": "results",
        "run_name": "wf",
        "source": {"type": "sample", "sample": SampleSpec.tiny().to_dict()},
        "grid": GRID,
        "frequency": "annual",
        "plugin": "pq",
        "plugin_config": {"filters": {}},
        "chunk_size": 256,
        "cog_opts": {"blocksize": 256},
        "resources": {
            "tile": {"threads": TILE_THREADS, "mem_mb": TILE_MEM_MB, "runtime": 20},
            "mosaic": {"threads": 1, "mem_mb": 1000},
        },
    }
    (workdir / "run.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(config))))


def snakemake_cmd(
    profile: str, endpoint: str, *args: str, configfiles: tuple[str, ...] = ("run.yaml",)
) -> list[str]:
    return [
        str(VENV_BIN / "snakemake"),
        # tests of this module run one after another in one folder: a lock left by an earlier test's
        # killed or timed-out controller must not fail the next one
        "--nolock",
        *args,
        "--configfile",
        *configfiles,
        "--profile",
        f"profiles/{profile}",
        "--default-storage-prefix",
        PREFIX,
        f"--storage-s3-endpoint-url={endpoint}",
    ]


def controller_env(kubeconfig: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    env["KUBECONFIG"] = str(kubeconfig) if kubeconfig else "/nonexistent/kubeconfig"
    return env


def run(cmd: list[str], workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(
            f"{shlex.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, moto_server):  # noqa: F811
    """A working directory with the workflow, and the bucket filled up to the task list (a local run)."""
    path = tmp_path_factory.mktemp("k8s")
    copy_workflow(path)
    cmd = snakemake_cmd(
        "local", moto_server.endpoint, "results/tasks/wf.csv", "--default-storage-provider", "s3"
    )
    run([*cmd, "--cores", "2"], path, controller_env())
    return path


def stored_tasks() -> list[tuple[str, int, int]]:
    body = (
        boto3.client("s3").get_object(Bucket=BUCKET, Key="run/results/tasks/wf.csv")["Body"].read()
    )
    rows = list(csv.reader(io.StringIO(body.decode()), skipinitialspace=True))[1:]
    return sorted((r[0], int(r[1]), int(r[2])) for r in rows)


def test_k8s_profile_dry_run_needs_no_cluster(workdir, moto_server):  # noqa: F811
    proc = run(snakemake_cmd("k8s", moto_server.endpoint, "-n"), workdir, controller_env())
    out = proc.stdout + proc.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert int(counts["tile"]) == len(stored_tasks()) == 8
    assert int(counts["mosaic"]) == 2
    assert f"mem_mb={TILE_MEM_MB}" in out


def target_jobs(job: dict) -> list[tuple[str, int, int]]:
    """The tile jobs a pod runs, from its command's ``--target-jobs`` (``tile:period=...,x=...,y=...``)."""
    args = shlex.split(job["spec"]["template"]["spec"]["containers"][0]["args"][1])
    found = []
    for arg in args:
        if arg.startswith("tile:"):
            wildcards = dict(kv.split("=") for kv in arg[len("tile:") :].split(","))
            found.append((wildcards["period"], int(wildcards["x"]), int(wildcards["y"])))
    return sorted(found)


def no_secret_in(text: str) -> bool:
    return SECRET_KEY not in text and ACCESS_KEY not in text


def test_grouped_tile_job_specs(workdir, moto_server, tmp_path):  # noqa: F811
    tasks = stored_tasks()
    group_size = 3
    with FakeKubernetes(tmp_path / "k8s") as k8s:
        cmd = snakemake_cmd(
            "k8s", moto_server.endpoint, "--group-components", f"tiles={group_size}"
        )
        process = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=controller_env(k8s.kubeconfig),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            got_all = k8s.wait_for_jobs(math.ceil(len(tasks) / group_size), timeout_s=120)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                output = process.communicate(timeout=60)[0].decode(errors="replace")
            except subprocess.TimeoutExpired:
                process.kill()
                output = process.communicate()[0].decode(errors="replace")
        assert got_all, output[-5000:]
        jobs = list(k8s.jobs)
        secrets = list(k8s.secrets.values())
        posted = [path for method, path in k8s.requests if method == "POST"]

    namespace = PROFILE["kubernetes-namespace"]
    assert f"/apis/batch/v1/namespaces/{namespace}/jobs" in posted
    groups = [target_jobs(job) for job in jobs]
    assert sorted(len(g) for g in groups) == [2, 3, 3]
    assert sorted(t for g in groups for t in g) == tasks
    for job in jobs:
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["image"] == PROFILE["container-image"]
        assert container["command"] == ["/bin/sh"] and container["args"][0] == "-c"
        script = container["args"][1]
        assert (
            "pip install --target '.snakemake/pip-deployments' snakemake-storage-plugin-s3"
            in script
        )
        assert "-m snakemake --deploy-sources s3://" in script
        tokens = shlex.split(script)
        assert tokens[tokens.index("--default-storage-prefix") + 1] == PREFIX
        assert container["workingDir"] == "/workdir" and pod["restartPolicy"] == "Never"
        # a pod runs its tiles side by side and asks for all of them: CPU is threads x kubernetes-cpu-scalar
        # (0.95) in millicores, memory mem_mb in MB, each summed over the pod's tiles
        n = len(target_jobs(job))
        assert (
            container["resources"]["requests"]["cpu"] == f"{int(n * TILE_THREADS * 0.95 * 1000)}m"
        )
        assert container["resources"]["requests"]["memory"] == f"{n * TILE_MEM_MB}M"
        # the default backend (cpu) asks for no GPU
        assert "nvidia.com/gpu" not in json.dumps(container["resources"])
        assert not pod.get("tolerations")
        assert no_secret_in(json.dumps(job))
    for secret in secrets:
        values = [base64.b64decode(v).decode() for v in (secret.get("data") or {}).values()]
        assert all(no_secret_in(v) for v in values)


def test_gpu_backend_tile_pods_request_one_gpu_per_tile(workdir, moto_server, tmp_path):  # noqa: F811
    """backend: gpu → the tile pods ask for nvidia.com/gpu, one per tile of the pod, with the limit Kubernetes
    requires for it (so CPU and memory get limits equal to their requests), and tolerate the GPU nodes' taint."""
    (workdir / "gpu.yaml").write_text(yaml.safe_dump({"backend": "gpu"}))
    tasks = stored_tasks()
    group_size = 2
    with FakeKubernetes(tmp_path / "k8s") as k8s:
        cmd = snakemake_cmd(
            "k8s",
            moto_server.endpoint,
            "--group-components",
            f"tiles={group_size}",
            configfiles=("run.yaml", "gpu.yaml"),
        )
        process = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=controller_env(k8s.kubeconfig),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            got_all = k8s.wait_for_jobs(len(tasks) // group_size, timeout_s=120)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                output = process.communicate(timeout=60)[0].decode(errors="replace")
            except subprocess.TimeoutExpired:
                process.kill()
                output = process.communicate()[0].decode(errors="replace")
        assert got_all, output[-5000:]
        jobs = list(k8s.jobs)
    tile_jobs = [job for job in jobs if target_jobs(job)]
    assert sorted(t for job in tile_jobs for t in target_jobs(job)) == tasks
    for job in tile_jobs:
        pod = job["spec"]["template"]["spec"]
        resources = pod["containers"][0]["resources"]
        # tiles of a pod run side by side, each on its own GPU: Snakemake sums the group's resources
        gpus = str(len(target_jobs(job)))
        assert resources["requests"]["nvidia.com/gpu"] == gpus
        assert resources["limits"]["nvidia.com/gpu"] == gpus
        n = len(target_jobs(job))
        assert resources["limits"]["cpu"] == f"{n * TILE_THREADS * 1000}m"
        assert (
            resources["limits"]["memory"]
            == resources["requests"]["memory"]
            == f"{n * TILE_MEM_MB}M"
        )
        assert {
            "key": "nvidia.com/gpu",
            "operator": "Equal",
            "value": "present",
            "effect": "NoSchedule",
        } in pod["tolerations"]


# --- pods, emulated: what grouping saves -----------------------------------------------------------------


def wheel_from_installed(dist_name: str, out_dir: Path) -> Path:
    """A wheel of an installed pure-Python distribution (the image bakes the real one; no index here)."""
    dist = importlib.metadata.distribution(dist_name)
    name = dist.metadata["Name"].replace("-", "_")
    info = f"{name}-{dist.version}.dist-info"
    wheel = out_dir / f"{name}-{dist.version}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(wheel, "w") as zf:
        for file in dist.files or []:
            parts = Path(str(file)).parts
            if (
                parts[0] == ".."
                or "__pycache__" in parts
                or file.name in {"RECORD", "INSTALLER", "REQUESTED"}
            ):
                continue
            if file.name == "direct_url.json":
                continue
            data = Path(file.locate()).read_bytes()
            zf.writestr(str(file), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{file},sha256={digest},{len(data)}")
        zf.writestr(f"{info}/RECORD", "\n".join([*records, f"{info}/RECORD,,"]) + "\n")
    return wheel


def pod_environment(moto_endpoint: str, wheelhouse: Path, home: Path) -> dict[str, str]:
    """What the image and the node give a pod: the Dockerfile's pip settings, PATH, an S3 role (here: moto keys)."""
    from moto_server import client_environment

    return {
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": str(REPO),  # the image holds this checkout's package
        "HOME": str(home),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheelhouse),
        "PIP_NO_DEPS": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        **client_environment(moto_endpoint),
    }


def tile_seconds(pod_workdir: Path) -> list[float]:
    """Seconds each tile of a pod spent in ``run_tile`` (the ``total`` of the JSON line its job logs)."""
    totals = []
    for log in pod_workdir.glob("**/results/logs/tile/*/*.log"):
        found = re.findall(r'"total": ([0-9.]+)', log.read_text())
        totals.append(float(found[-1]))
    return totals


def test_emulated_pods_one_and_two_tiles(workdir, moto_server, tmp_path):  # noqa: F811
    """Three tiles in groups of two: one pod runs two tiles, the other one; both really run, side by side."""
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    wheel_from_installed("snakemake-storage-plugin-s3", wheelhouse)
    tasks = stored_tasks()[:3]
    # three tiles, no mosaics: the pods run only tile jobs
    pods_config = {"tasks": [f"{p}/{x}/{y}" for p, x, y in tasks], "mosaic": {"enabled": False}}
    (workdir / "pods.yaml").write_text(yaml.safe_dump(pods_config))
    env = pod_environment(moto_server.endpoint, wheelhouse, tmp_path)
    with FakeKubernetes(tmp_path / "cluster", run_pods=True, pod_env=env) as k8s:
        cmd = snakemake_cmd(
            "k8s",
            moto_server.endpoint,
            "--group-components",
            "tiles=2",
            configfiles=("run.yaml", "pods.yaml"),
        )
        proc = run([*cmd, "--latency-wait", "10"], workdir, controller_env(k8s.kubeconfig))
        pods = list(k8s.pods.values())
    assert len(pods) == 2, proc.stdout[-3000:]
    assert all(p.exit_code == 0 for p in pods)
    # every pod installed the plugin offline and fetched the workflow sources from the bucket
    for pod in pods:
        log = pod.log_path.read_text()
        assert "Successfully installed snakemake-storage-plugin-s3" in log
        assert (pod.workdir / "Snakefile").is_file() and (
            pod.workdir / "rules" / "tiles.smk"
        ).is_file()
    listed = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="run/results/")["Contents"]
    for period, x, y in tasks:
        # each tile's COGs and its item are in the bucket
        names = [o["Key"] for o in listed if f"/x{x}/y{y}/{period}/" in o["Key"]]
        assert any(k.endswith(".stac-item.json") for k in names)
        assert any(k.endswith("_clear.tif") for k in names)
    measured = {}
    for pod in pods:
        wall, tiles = pod.ended - pod.started, tile_seconds(pod.workdir)
        # a pod's tiles run side by side: what the pod adds is its wall time beyond its longest tile
        measured[f"{len(tiles)} tile(s)"] = {
            "pod_seconds": round(wall, 1),
            "tile_seconds": [round(t, 1) for t in tiles],
            "overhead": round(wall - max(tiles), 1),
            "pod_seconds_per_tile": round(wall / len(tiles), 1),
        }
    assert sorted(measured) == ["1 tile(s)", "2 tile(s)"]
    print(f"\nemulated pods, run side by side on this machine: {json.dumps(measured)}")
