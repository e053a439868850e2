"""The default chain through `profiles/slurm` on a real single-node Slurm cluster started by the test.

munged + slurmctld + slurmd (Debian's packages) run as root from a generated slurm.conf (tests/slurm/); the tiny sample
goes sample → cache → task list (local) → tiles (one Slurm job array) → mosaic. The test checks, from slurmctld's own
log, that every tile ran as a Slurm array task with exit code 0 on the cluster's partition with the CPUs its rule asks
for, that every selected task has its outputs, that the local rules never went to Slurm, and that a second run
submits nothing and changes nothing. It skips, saying why, where Slurm cannot run (not root, packages missing, a foreign
/etc/slurm/slurm.conf, another session holding the cluster). The daemons are always stopped at the end; Snakemake
runs under a timeout (SIGINT, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from eostats.sample import SampleSpec

sys.path.insert(0, str(Path(__file__).resolve().parent / "slurm"))
from job_timeline import parse_slurmctld_log, submissions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SLURM_SCRIPTS = REPO / "tests" / "slurm"
PROFILE = REPO / "profiles" / "slurm"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
# one test cluster per machine: ports 6817/6818 and /etc/slurm/slurm.conf are machine-wide
LOCK_FILE = Path("/tmp/eostats-slurm-test.lock")
LOCK_WAIT_S = 300
PARTITION = "eostats"  # not the profile's: the test must override it, as a user does for their site
ACCOUNT = "eostats-test"  # accepted as is: without slurmdbd nothing enforces accounts
SNAKEMAKE_TIMEOUT_S = 300
# Two tiles of one period keep the test near two minutes: each Slurm job pays ~10 s of CPU for two Snakemake start-ups
# (the job's own and the one `srun` runs; three for an array task), and the chain is three Slurm jobs deep
# (cache, tiles, mosaic).
TASK_SELECTORS = [":2"]
TILE_THREADS, MOSAIC_THREADS = 1, 2

pytestmark = [pytest.mark.workflow, pytest.mark.xdist_group("slurm")]

GRID = {"crs": "EPSG:3577", "resolution": 30, "tile_size": 512, "origin": [-2688000, -5472000]}


def why_slurm_cannot_run() -> str | None:
    """The reason this machine cannot host the test cluster, or None."""
    if os.geteuid() != 0:
        return (
            "needs root (munged --force, SlurmUser=root, the /etc/slurm/slurm.conf link); "
            "run `make test` as root, see docs/scaling.md#slurm-hpc"
        )
    missing = [
        t
        for t in ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel")
        if not shutil.which(t)
    ]
    if missing:
        return (
            f"{', '.join(missing)} not installed: `make install` as root installs the Debian packages "
            "slurmctld slurmd slurm-client munge (envs/apt-packages.txt)"
        )
    if SYSTEM_CONF.exists() and not SYSTEM_CONF.is_symlink():
        return f"{SYSTEM_CONF} belongs to a real Slurm installation; the test cluster would need that path"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed in this environment (requirements.lock.txt)"
    return None


@contextlib.contextmanager
def machine_lock(path: Path, wait_s: float) -> Iterator[None]:
    """Exclusive lock shared by every test session on this machine (several engineers run the suite at once)."""
    with open(path, "a") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.skip(
                        f"another test session held the single-node Slurm cluster ({path}) for {wait_s:.0f} s"
                    )
                time.sleep(2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory) -> Iterator[Path]:
    """A running single-node cluster; yields its BASE directory (config, state, logs). Stopped even on failure."""
    reason = why_slurm_cannot_run()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("slurm")
    with machine_lock(LOCK_FILE, LOCK_WAIT_S):
        try:
            started = subprocess.run(
                [str(SLURM_SCRIPTS / "start-slurm.sh"), str(base), PARTITION],
                capture_output=True,
                text=True,
                timeout=90,
            )
            if started.returncode == 3:
                pytest.skip(f"cannot start the test cluster: {started.stderr.strip()}")
            assert started.returncode == 0, (
                f"start-slurm.sh failed:\n{started.stdout}\n{started.stderr}"
            )
            yield base
        finally:
            subprocess.run(
                [str(SLURM_SCRIPTS / "stop-slurm.sh"), str(base)], timeout=60, check=False
            )


def write_config(workdir: Path) -> Path:
    config = {
        "results": str(workdir / "results"),
        "run_name": "slurm",
        "source": {"type": "sample", "sample": SampleSpec.tiny().to_dict()},
        "grid": GRID,
        "frequency": "annual",
        "tasks": TASK_SELECTORS,
        "chunk_size": 256,
        "cog_opts": {"blocksize": 256},
        "resources": {
            "cache": {"threads": 1, "mem_mb": 1000, "runtime": 10},
            "tile": {"threads": TILE_THREADS, "mem_mb": 2000, "runtime": 10},
            "mosaic": {"threads": MOSAIC_THREADS, "mem_mb": 1000, "runtime": 10},
        },
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(config))))
    return path


def site_overrides() -> list[str]:
    """The profile's default-resources with this cluster's partition and account, everything else as shipped."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    defaults = dict(profile["default-resources"])
    assert {"slurm_partition", "slurm_account"} <= set(defaults), (
        "the profile names a partition and an account"
    )
    defaults.update(slurm_partition=PARTITION, slurm_account=ACCOUNT)
    return ["--default-resources", *(f"{k}={v}" for k, v in defaults.items())]


def run_snakemake(workdir: Path, config: Path, cluster: Path, *args: str) -> str:
    """Snakemake with profiles/slurm; SIGINT (Snakemake cancels its Slurm jobs) then SIGKILL when it runs too long."""
    cmd = [
        str(SNAKEMAKE),
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config),
        "--profile",
        str(PROFILE),
        *site_overrides(),
        # the first status check 40 s after a submission suits hour-long tiles, not a test
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-logdir",
        str(workdir / "slurm-logs"),
        "--slurm-keep-successful-logs",
        *args,
    ]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "SLURM_CONF": str(cluster / "etc" / "slurm.conf"),
    }
    log_path = workdir / f"snakemake-{len(list(workdir.glob('snakemake-*.log')))}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=SNAKEMAKE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            rc = None
    output = log_path.read_text()
    if rc != 0:
        ctld = (cluster / "log" / "slurmctld.log").read_text()[-3000:]
        why = f"timed out after {SNAKEMAKE_TIMEOUT_S} s" if rc is None else f"exited {rc}"
        raise AssertionError(f"snakemake {why}:\n{output[-6000:]}\n--- slurmctld.log ---\n{ctld}")
    return output


def selected_tasks(results: Path) -> list[tuple[str, int, int]]:
    """The run's tasks: the CSV's rows sorted by (period, x, y), cut by the slice in TASK_SELECTORS."""
    with open(results / "tasks" / "slurm.csv", newline="") as f:
        rows = list(csv.reader(f, skipinitialspace=True))
    assert rows[0] == ["T", "X", "Y", "datasets", "days"]
    tasks = sorted((r[0], int(r[1]), int(r[2])) for r in rows[1:])
    assert len(tasks) >= 4, "the tiny sample covers at least 4 tasks"
    return tasks[:2]


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm-run")
    config = write_config(workdir)
    started = time.monotonic()
    output = run_snakemake(workdir, config, slurm_cluster)
    return {
        "workdir": workdir,
        "config": config,
        "cluster": slurm_cluster,
        "output": output,
        "wall_s": time.monotonic() - started,
        "results": workdir / "results",
    }


def test_every_tile_ran_as_a_task_of_one_slurm_array(slurm_run):
    tasks = selected_tasks(slurm_run["results"])
    # Snakemake's own record of the array submission
    arrays = re.findall(
        r"Submitted array job with Snakemake IDs (\S+) and SLURM job ID (\d+)\. The individual task IDs are (\d+)-(\d+)",
        slurm_run["output"],
    )
    assert len(arrays) == 1, arrays
    snakemake_ids, array_id, first, last = arrays[0]
    assert (int(first), int(last)) == (1, len(tasks))
    assert len(snakemake_ids.split(",")) == len(tasks)

    # slurmctld's record: every task of that array was allocated on the test partition and exited 0
    jobs = parse_slurmctld_log(slurm_run["cluster"] / "log" / "slurmctld.log")
    array_tasks = [j for j in jobs.values() if j.array_job_id == int(array_id)]
    assert sorted(j.job_id for j in array_tasks) == sorted(
        f"{array_id}_{i}" for i in range(1, len(tasks) + 1)
    )
    for job in array_tasks:
        assert job.exit_code == 0 and job.ended is not None, job
        assert job.partition == PARTITION
        assert job.cpus == TILE_THREADS, "cpus_per_task follows the tile rule's threads"

    # each array task's Slurm log shows exactly one tile executed (the `localrule` block of the run that `srun`
    # started inside the job; the job's outer Snakemake prints the array's first tile too): all tiles, none twice
    ran = []
    for log in (slurm_run["workdir"] / "slurm-logs" / "rule_tile").glob(f"{array_id}_*.log"):
        executed = re.findall(
            r"^localrule tile:\n(?:\s+\w+: .*\n)*?\s+wildcards: (.*)$", log.read_text(), re.M
        )
        assert len(executed) == 1, log
        wildcards = dict(item.split("=", 1) for item in executed[0].split(", "))
        ran.append((wildcards["period"], int(wildcards["x"]), int(wildcards["y"])))
    assert sorted(ran) == sorted(tasks)


def slurm_jobs_by_rule(logdir: Path) -> dict[str, list[str]]:
    """Slurm job ids per rule, from the plugin's log names: rule_<name>/<wildcards>/<jobid>.log, rule_<name>/<A>_<a>.log."""
    jobs: dict[str, list[str]] = {}
    for log in logdir.rglob("*.log"):
        rule = log.relative_to(logdir).parts[0].removeprefix("rule_")
        jobs.setdefault(rule, []).append(log.stem)
    return jobs


def test_other_rules_went_to_slurm_and_local_rules_did_not(slurm_run):
    by_rule = slurm_jobs_by_rule(slurm_run["workdir"] / "slurm-logs")
    assert {"dataset_cache", "tile", "mosaic"} <= set(by_rule)
    # the checkpoint task_list, period_geojson and all are localrules: they ran in the controller
    assert not set(by_rule) & {"task_list", "period_geojson", "all"}
    periods = {t[0] for t in selected_tasks(slurm_run["results"])}
    assert len(by_rule["dataset_cache"]) == 1
    assert len(by_rule["mosaic"]) == len(periods), (
        "one plain job per period (arrays only for tiles)"
    )
    jobs = parse_slurmctld_log(slurm_run["cluster"] / "log" / "slurmctld.log")
    for rule, cpus in (("dataset_cache", 1), ("mosaic", MOSAIC_THREADS)):
        for job_id in by_rule[rule]:
            job = jobs[job_id]
            assert job.array_job_id is None and job.exit_code == 0 and job.partition == PARTITION, (
                job
            )
            assert job.cpus == cpus, f"{rule}: cpus_per_task follows the rule's threads"


def test_every_task_has_its_outputs(slurm_run):
    results = slurm_run["results"]
    tasks = selected_tasks(results)
    items = {
        (p.parent.name, int(p.parent.parent.parent.name[1:]), int(p.parent.parent.name[1:])): p
        for p in results.glob("*/*/x*/y*/*/*.stac-item.json")
    }
    assert set(items) == set(tasks)
    for item in items.values():
        doc = json.loads(item.read_text())
        for asset in doc["assets"].values():
            assert (item.parent / asset["href"]).stat().st_size > 0
    for period in {t[0] for t in tasks}:
        assert (results / "tasks" / f"slurm-{period}.geojson").is_file()
        assert list(results.glob(f"*/*/mosaics/{period}/*.tif")), f"mosaics of {period}"


def test_second_run_submits_nothing_and_changes_nothing(slurm_run):
    results = slurm_run["results"]
    ctld_log = slurm_run["cluster"] / "log" / "slurmctld.log"
    before = {
        p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file() and "logs" not in p.parts
    }
    submitted_before = submissions(ctld_log)
    output = run_snakemake(slurm_run["workdir"], slurm_run["config"], slurm_run["cluster"])
    assert "Nothing to be done" in output
    assert submissions(ctld_log) == submitted_before
    after = {
        p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file() and "logs" not in p.parts
    }
    assert after == before
