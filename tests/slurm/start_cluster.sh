#!/usr/bin/env bash
# A one-node SLURM cluster on localhost without accounting (munged, slurmctld, slurmd), for
# tests/test_slurm.py (its docstring says why each piece is there). Needs root and Debian packages
#   apt-get install --no-install-recommends munge slurm-client slurmctld slurmd
# Usage: start_cluster.sh STATE_DIR [PARTITION]   (stop with stop_cluster.sh STATE_DIR)
# Snakemake then needs --slurm-status-command squeue (no slurmdbd, so no sacct).
set -euo pipefail

state=$(realpath -m "${1:?usage: start_cluster.sh STATE_DIR [PARTITION]}")
partition=${2:-debug}
conf=/etc/slurm/slurm.conf  # must be here: jobs' nested srun cannot see SLURM_CONF

for bin in munged mungekey slurmctld slurmd sbatch scontrol sinfo; do
    command -v "$bin" >/dev/null || { echo "start_cluster.sh: $bin not found (install munge slurm-client slurmctld slurmd)" >&2; exit 3; }
done
[ "$(id -u)" = 0 ] || { echo "start_cluster.sh: needs root" >&2; exit 3; }
if [ -e "$conf" ] && ! grep -q "^# prehab test cluster" "$conf"; then
    echo "start_cluster.sh: $conf exists and is not ours; refusing to overwrite it" >&2
    exit 3
fi

mkdir -p "$state"/{ctld,slurmd}

# 1) munge: key once, runtime folders owned by munge, daemon as user munge
mkdir -p /etc/munge /run/munge /var/log/munge /var/lib/munge
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile /etc/munge/munge.key
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    cp /run/munge/munged.pid "$state/munged.pid"  # we started it: stop_cluster.sh stops it
fi
munge -n | unmunge >/dev/null

# 2) slurm.conf: node line from `slurmd -C` (CPUs and RealMemory must match), no DNS needed
node=$(slurmd -C | head -1)
host=$(hostname -s)
mkdir -p /etc/slurm
cat > "$conf" <<CONF
# prehab test cluster (tests/slurm/start_cluster.sh); state in $state
ClusterName=prehabtest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/slurmd
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MinJobAge=3600
# (finished jobs stay in squeue for an hour: tests/test_slurm.py reads their states there)
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$partition Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

# 3) controller and node daemons (each daemonizes and writes its pid file)
slurmctld
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
slurmd
for _ in $(seq 200); do
    [ "$(sinfo -h -o %t 2>/dev/null)" = idle ] && break
    sleep 0.1
done
if [ "$(sinfo -h -o %t)" != idle ]; then
    echo "start_cluster.sh: node not idle: $(sinfo -h -o '%t %E')" >&2
    exit 1
fi
echo "SLURM up: partition $partition, state $state"
