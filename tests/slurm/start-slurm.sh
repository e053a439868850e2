#!/bin/bash
# Start a throwaway single-node Slurm cluster (munged + slurmctld + slurmd, as root) under BASE.
#
# Usage: start-slurm.sh BASE [PARTITION]      (stop it with stop-slurm.sh BASE)
#
# Needs root (munged --force, SlurmUser=root) and Debian's packages slurmctld slurmd slurm-client munge.
# Writes one path outside BASE: the symlink /etc/slurm/slurm.conf -> BASE/etc/slurm.conf. Exporting SLURM_CONF is not
# enough: inside each job the snakemake slurm-jobstep plugin drops every SLURM_* variable before its nested `srun`,
# which then only finds the config at the compiled-in default path. An existing /etc/slurm/slurm.conf that is not a
# link made by this script is never touched.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BASE=$(realpath -m "${1:?usage: start-slurm.sh BASE [PARTITION]}")
PARTITION=${2:-debug}
SYSTEM_CONF=/etc/slurm/slurm.conf

if [ "$(id -u)" != 0 ]; then
  echo "start-slurm.sh: must run as root (munged --force, SlurmUser=root, $SYSTEM_CONF link)" >&2
  exit 2
fi
for tool in munged mungekey slurmctld slurmd sinfo sbatch squeue; do
  command -v "$tool" >/dev/null || { echo "start-slurm.sh: $tool not found; install the Debian packages slurmctld slurmd slurm-client munge" >&2; exit 2; }
done

# A link left by an earlier test cluster whose run was killed before its teardown: stop that cluster first.
if [ -L "$SYSTEM_CONF" ]; then
  old_conf=$(readlink "$SYSTEM_CONF")
  old_base=$(dirname "$(dirname "$old_conf")")
  if [ "$old_base" != "$BASE" ] && [ -f "$old_base/.eostats-test-cluster" ]; then
    echo "start-slurm.sh: stopping a leftover test cluster under $old_base" >&2
    "$HERE/stop-slurm.sh" "$old_base" || true
  fi
fi
if [ -e "$SYSTEM_CONF" ] || [ -L "$SYSTEM_CONF" ]; then
  if [ "$(readlink "$SYSTEM_CONF" || true)" != "$BASE/etc/slurm.conf" ]; then
    echo "start-slurm.sh: refusing to replace $SYSTEM_CONF (not a link made by this script)" >&2
    exit 3
  fi
fi

"$HERE/write-slurm-conf.sh" "$BASE" "$PARTITION" >/dev/null
touch "$BASE/.eostats-test-cluster"
export SLURM_CONF="$BASE/etc/slurm.conf"

# munge: our own key and socket inside BASE; --force lets it run as root; 711 so non-root clients reach the socket
chmod 711 "$BASE/munge"
[ -f "$BASE/munge/munge.key" ] || mungekey --create --keyfile="$BASE/munge/munge.key" --bits=1024
chmod 400 "$BASE/munge/munge.key"
munged --force --key-file="$BASE/munge/munge.key" --socket="$BASE/munge/munge.socket" \
  --pid-file="$BASE/munge/munged.pid" --log-file="$BASE/log/munged.log" --seed-file="$BASE/munge/munged.seed"

mkdir -p "$(dirname "$SYSTEM_CONF")"
ln -sfn "$SLURM_CONF" "$SYSTEM_CONF"
slurmctld -f "$SLURM_CONF" # both daemonize and write their pid files
slurmd -f "$SLURM_CONF"

# the node registers within about a second; give it 30 s on a loaded machine
for _ in $(seq 1 60); do
  if [ "$(sinfo -h -N -o '%t' 2>/dev/null | head -n 1)" = idle ]; then
    sinfo
    exit 0
  fi
  sleep 0.5
done
echo "start-slurm.sh: the node did not become idle within 30 s" >&2
sinfo -N -l >&2 || true
tail -n 20 "$BASE"/log/*.log >&2 || true
exit 4
