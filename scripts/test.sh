#!/usr/bin/env bash
# The test suite (after scripts/setup.sh): unit tests, the CLI on the fixtures, the workflow's dry
# runs and its tiny end-to-end run. Extra arguments go to pytest (e.g. -k whitening).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest -q -ra "$@"
