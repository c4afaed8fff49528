#!/usr/bin/env bash
# The GPU check in one call: build llama-cpp-python with CUDA from carried source, install aimo-gguf,
# write synthetic 7B and gpt-oss-20b models, run the gpu tests and the benchmarks, write one JSON.
#
#   scripts/gpu_check.sh pack             here: write .gpu-check/bundle (carry it)
#   scripts/gpu_check.sh run [--dry-run]  there: everything, figures in $OUT/gpu-check.json
#   scripts/gpu_check.sh run --cpu        anywhere: the same with a CPU build, as a rehearsal
#
# See scripts/gpu_check.py (standard library only) and the README's "GPU check" section.
set -euo pipefail
exec "${PYTHON:-python3}" "$(dirname "$0")/gpu_check.py" "$@"
