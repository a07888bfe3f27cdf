#!/usr/bin/env bash
# Install Debian's SLURM and munge packages for the local one-node cluster of tests/test_slurm.py
# (CI runs this; needs root and the Debian registry). Idempotent: a second run only checks.
# Daemons do not start on install (no systemd): tests/slurm/start_cluster.sh starts them.
set -euo pipefail
packages=(munge slurm-client slurmctld slurmd)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then
    echo "[install_slurm] ok: ${packages[*]} installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "[install_slurm] needs root to install ${missing[*]}" >&2
    exit 3
fi
echo "[install_slurm] installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
echo "[install_slurm] ok: $(sbatch --version)"
