#!/usr/bin/env bash
# Stop what start_cluster.sh STATE_DIR started, by pid file, in reverse order, and remove its
# /etc/slurm/slurm.conf. munged is stopped only if start_cluster.sh started it.
set -uo pipefail

state=$(realpath -m "${1:?usage: stop_cluster.sh STATE_DIR}")
for daemon in slurmd slurmctld munged; do
    pidfile="$state/$daemon.pid"
    [ -s "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    rm -f "$pidfile"
done
if grep -q "^# prehab test cluster" /etc/slurm/slurm.conf 2>/dev/null; then
    rm -f /etc/slurm/slurm.conf
fi
echo "SLURM stopped ($state)"
