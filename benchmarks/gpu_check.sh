#!/usr/bin/env bash
# GPU check: the project's train and pseudo-label code on random whisper-small/-base weights,
# on the CUDA GPU (fp16) and then on the CPU; prints samples/s, labelling RTF, peak GPU memory.
# Without a GPU it prints the CPU figures only. Options: see benchmarks/gpu_check.py --help.
#   bash benchmarks/gpu_check.sh [--models small,base] [--steps 12] [--skip-cpu] ...
# On a machine that can fetch nothing, carry the wheels of the modules it reports missing
# and put them first: bash benchmarks/gpu_check.sh --wheels DIR [options]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
fi
if [ "${1:-}" = "--wheels" ]; then
  site="$(mktemp -d)"
  "$PY" -m pip install --quiet --no-index --no-deps --no-compile --target "$site" "$2"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  shift 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
exec "$PY" benchmarks/gpu_check.py "$@"
