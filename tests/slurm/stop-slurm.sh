#!/bin/bash
# Stop the test cluster started by start-slurm.sh BASE: SIGTERM to slurmd, slurmctld and munged at once, SIGKILL
# whatever is still alive after 10 s, then remove the /etc/slurm/slurm.conf link if it points into BASE.
# Safe to run twice, or on a cluster that never fully started.
#
# Usage: stop-slurm.sh BASE
set -uo pipefail
BASE=$(realpath -m "${1:?usage: stop-slurm.sh BASE}")
SYSTEM_CONF=/etc/slurm/slurm.conf
PID_FILES=("$BASE/run/slurmd.pid" "$BASE/run/slurmctld.pid" "$BASE/munge/munged.pid")

# only signal a pid that still runs the daemon named by its pid file (pids are reused)
daemon_pid() {
  local pid_file=$1 name pid
  name=$(basename "$pid_file" .pid)
  [ -f "$pid_file" ] || return 1
  pid=$(cat "$pid_file" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
  echo "$pid"
}

# jobs first, while slurmctld still answers: their slurmstepd processes would outlive slurmd
if daemon_pid "$BASE/run/slurmctld.pid" >/dev/null; then
  export SLURM_CONF="$BASE/etc/slurm.conf"
  scancel --quiet --user root 2>/dev/null || true
  for _ in $(seq 1 50); do
    [ -z "$(squeue -h -t RUNNING,PENDING,COMPLETING -o %i 2>/dev/null)" ] && break
    sleep 0.2
  done
fi

pids=()
for pid_file in "${PID_FILES[@]}"; do
  if pid=$(daemon_pid "$pid_file"); then
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  fi
done
for _ in $(seq 1 100); do
  alive=()
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
  [ ${#alive[@]} -eq 0 ] && break
  sleep 0.1
done
for pid in "${pids[@]}"; do
  kill -0 "$pid" 2>/dev/null && { echo "stop-slurm.sh: SIGKILL $pid" >&2; kill -KILL "$pid"; }
done
rm -f "${PID_FILES[@]}"
if [ "$(readlink "$SYSTEM_CONF" 2>/dev/null)" = "$BASE/etc/slurm.conf" ]; then
  rm -f "$SYSTEM_CONF"
fi
exit 0
