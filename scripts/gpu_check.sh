#!/usr/bin/env bash
# Check the GPU path on a machine with one CUDA GPU: the tiny config (config/test.yaml) and one
# embedded testbed chain (vit-small, examples/chain.sh, 20 Prehab steps), each once on the GPU
# and once on the CPU (CUDA_VISIBLE_DEVICES=""), then every metrics.json and tensor file of the
# GPU run compared with the CPU run's within RTOL/ATOL (scripts/compare_results.py; the default
# tolerance allows a few test items to flip and float32 sums to reorder). Exits 0 when they agree.
#
#   bash scripts/gpu_check.sh          (OUT=results/gpu-check RTOL=2e-2 ATOL=5e-3)
#
# Not run by the maintainers yet (their machines have no GPU): the time it takes is unmeasured.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
if ! .venv/bin/python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: torch sees no CUDA GPU here (torch.cuda.is_available() is False); nothing to check" >&2
    exit 2
fi
out=${OUT:-results/gpu-check}
rtol=${RTOL:-2e-2}
atol=${ATOL:-5e-3}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
for side in gpu cpu; do
    if [ "$side" = cpu ]; then visible=""; else visible=${CUDA_VISIBLE_DEVICES-0}; fi
    echo "== $side: tiny config"
    CUDA_VISIBLE_DEVICES=$visible .venv/bin/snakemake --cores 2 --configfile config/test.yaml \
        --config results_dir="$out/tiny-$side" --quiet
    echo "== $side: vit-small chain"
    CUDA_VISIBLE_DEVICES=$visible OUT="$out/chain-$side/runs" EXTRA_PREHAB_ARGS="--steps 20" \
        PREHAB=.venv/bin/prehab bash examples/chain.sh vit-small > "$out/chain-$side.txt"
done
status=0
for part in tiny chain; do
    echo "== $part: GPU against CPU (rtol $rtol, atol $atol)"
    .venv/bin/python scripts/compare_results.py "$out/$part-cpu" "$out/$part-gpu" --rtol "$rtol" --atol "$atol" \
        || status=1
done
[ "$status" = 0 ] && echo "gpu_check: the GPU runs agree with the CPU runs" || echo "gpu_check: they differ (above)"
exit $status
