#!/usr/bin/env bash
# Check the GPU path on llama-tiny (scripts/gpu_check.py: one line per check, exit 0 when every
# check holds): every step on the GPU against the CPU, bf16 against float32, the launcher, wall
# time per step; with two GPUs or more, Prehab and rehab through FSDP on 2 GPUs against 1.
# About 4 minutes on 2 CPU cores with the CPU standing in for the GPU; unmeasured on a GPU.
#
#   bash scripts/gpu_check.sh                 here: the repository's .venv (scripts/setup.sh makes it)
#   bash scripts/gpu_check.sh --bundle DIR    copy what a GPU node needs into DIR (about 10 MB:
#                                             the package's source and llama-tiny's tokens and tokenizer)
# then on a GPU node without internet, with a Python that has torch, transformers, timm and peft
# (versions may differ from the pins):
#   python -m pip install --no-deps DIR/src     (or skip it: this script puts DIR/src on PYTHONPATH)
#   PYTHON=python bash DIR/src/scripts/gpu_check.sh
# Outputs go to $OUT (default results/gpu-check); RTOL (default 2e-2) bounds GPU against CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1-}" = --bundle ]; then
    dest=$(mkdir -p "${2:?--bundle needs a folder}" && cd "$2" && pwd)
    mkdir -p "$dest/src" "$dest/resources/tokens" "$dest/resources/smollm2_135m"
    git archive HEAD prehab scripts pyproject.toml README.md | tar -x -C "$dest/src"
    [ -f resources/tokens/smollm2_wikipedia_train.pt ] || .venv/bin/python -m prehab pretrain --arch llama-tiny \
        --steps 0 --out "$(mktemp -d)/warm" > /dev/null  # makes the token cache
    cp resources/tokens/smollm2_wikipedia_*.pt "$dest/resources/tokens/"
    for f in CACHE_COMPLETE config.json tokenizer.json tokenizer_config.json; do
        cp "resources/smollm2_135m/$f" "$dest/resources/smollm2_135m/"
    done
    du -sh "$dest"
    exit 0
fi
if [ -n "${PYTHON-}" ]; then
    python=$PYTHON
    # a bundle: its resources beside src/, and the package from src/ unless it is installed
    [ -d ../resources/tokens ] && export PREHAB_RESOURCES=${PREHAB_RESOURCES:-$(cd ../resources && pwd)}
    "$python" -c 'import prehab' 2> /dev/null || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    [ -x .venv/bin/python ] || bash scripts/setup.sh
    python=.venv/bin/python
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$python" scripts/gpu_check.py --out "${OUT:-results/gpu-check}" --rtol "${RTOL:-2e-2}" "$@"
