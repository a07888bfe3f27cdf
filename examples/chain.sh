#!/usr/bin/env bash
# Run the six prehab steps for one architecture through the CLI and print each step's wall
# time and the metric of dense, SVD, SVD-LLM, the lambda = 0 control and Prehab (+ LoRA) at R.
#
#   examples/chain.sh ARCH            (e.g. vit-small, bert-small, llama-small, tiny-mlp)
#
# Prehab and control models are re-calibrated before SVD-LLM (their activations moved: the dense
# model's L is stale; measured on vit-small, keeping it cost 30 points at R = 0.6).
#
# Steps whose output folder already holds a metrics.json are reused (a second run resumes).
#
# Environment: RATIO (0.6), SURROGATE (nuclear_fro), LAM (1.0), SPACE (weight), SEED (0), OUT (runs/chain-ARCH),
# PREHAB (the prehab command; default .venv/bin/prehab), EXTRA_PREHAB_ARGS (e.g. "--steps 50").
set -euo pipefail
arch=${1:?usage: examples/chain.sh ARCH   (prehab archs lists them)}
cd "$(dirname "$0")/.."
prehab=${PREHAB:-.venv/bin/prehab}
ratio=${RATIO:-0.6}
surrogate=${SURROGATE:-nuclear_fro}
lam=${LAM:-1.0}
space=${SPACE:-weight}
seed=${SEED:-0}
out=${OUT:-runs/chain-$arch}
mkdir -p "$out"
declare -a timings

step() {  # step LABEL prehab-args... (the folder after --out is the step's output)
    local label=$1; shift
    local start=$SECONDS out_dir="" prev=""
    for a in "$@"; do [ "$prev" = "--out" ] && out_dir=$a; prev=$a; done
    if [ -f "$out_dir/metrics.json" ]; then  # done by an earlier run of this script: reuse
        local took; took=$(grep -o '"wall_time_s": [0-9.]*' "$out_dir/metrics.json" | grep -o '[0-9.]*$')
        timings+=("$(printf '%-22s %5.0fs (reused: its recorded wall time)' "$label" "$took")")
        return
    fi
    "$prehab" "$@" > "$out/$label.log" 2>&1 || { echo "step $label failed; see $out/$label.log" >&2; tail -3 "$out/$label.log" >&2; exit 1; }
    timings+=("$(printf '%-22s %5ss' "$label" $((SECONDS - start)))")
}

step pretrain        pretrain  --arch "$arch" --seed "$seed" --out "$out/dense"
step calibrate       calibrate --model "$out/dense" --seed "$seed" --out "$out/grams"
step prehab          prehab    --model "$out/dense" --grams "$out/grams" --surrogate "$surrogate" --lam "$lam" --space "$space" --seed "$seed" ${EXTRA_PREHAB_ARGS:-} --out "$out/prehab"
step control         prehab    --model "$out/dense" --grams "$out/grams" --surrogate "$surrogate" --lam 0 --space "$space" --seed "$seed" ${EXTRA_PREHAB_ARGS:-} --out "$out/control"
step recal-prehab    calibrate --model "$out/prehab" --seed "$seed" --out "$out/prehab-grams"
step recal-control   calibrate --model "$out/control" --seed "$seed" --out "$out/control-grams"
step compress-svd    compress  --model "$out/dense" --method svd --ratio "$ratio" --out "$out/svd"
step compress-svdllm compress  --model "$out/dense" --grams "$out/grams" --ratio "$ratio" --out "$out/svdllm"
step compress-ctl    compress  --model "$out/control" --grams "$out/control-grams" --ratio "$ratio" --out "$out/control-svdllm"
step compress-prehab compress  --model "$out/prehab" --grams "$out/prehab-grams" --ratio "$ratio" --out "$out/prehab-svdllm"
step rehab-svdllm    rehab     --model "$out/svdllm" --seed "$seed" --out "$out/svdllm-lora"
step rehab-prehab    rehab     --model "$out/prehab-svdllm" --seed "$seed" --out "$out/prehab-svdllm-lora"
for m in dense prehab control svd svdllm control-svdllm prehab-svdllm svdllm-lora prehab-svdllm-lora; do
    step "evaluate-$m" evaluate --model "$out/$m" --out "$out/$m/eval"
done

echo "== wall time per step ($arch)"
printf '%s\n' "${timings[@]}"
echo "== $arch at R = $ratio (surrogate $surrogate, lambda $lam, space $space, seed $seed)"
"$(dirname "$prehab")/python" - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = [("dense", "dense"), ("Prehab, uncompressed", "prehab"), ("control, uncompressed", "control"),
        ("SVD", "svd"), ("SVD-LLM", "svdllm"), ("control + SVD-LLM", "control-svdllm"),
        ("Prehab + SVD-LLM", "prehab-svdllm"), ("SVD-LLM + LoRA", "svdllm-lora"),
        ("Prehab + SVD-LLM + LoRA", "prehab-svdllm-lora")]
for label, folder in rows:
    m = json.loads((out / folder / "eval" / "metrics.json").read_text())["metrics"]
    print(f"{label:26s} {m['metric']} = {float(m[m['metric']]):.4f}   params = {m['model_params']:,}")
PY
