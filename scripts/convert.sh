#!/usr/bin/env bash
# Convert a Hugging Face model to quantized GGUF files, checked and hashed.
#
#   scripts/convert.sh SOURCE [--quant Q4_K_M,Q8_0] [--outtype f16|bf16] [--outdir models/]
#                             [--revision REV] [--imatrix FILE] [--name NAME] [--force] ...
#
# SOURCE is a local Hugging Face model folder or a Hub repo id (HF_TOKEN for
# gated repos). LLAMA_CPP_DIR names a llama.cpp checkout whose
# convert_hf_to_gguf.py to use instead of the installed llama-cpp-python's.
# A thin wrapper: the steps are `aimo-gguf convert` (see `aimo-gguf convert -h`),
# run by the Python that has aimo-gguf installed ($PYTHON, default python3).
set -euo pipefail

if [[ $# -eq 0 ]]; then
    sed -n '2,11s/^# \{0,1\}//p' "$0" >&2
    exit 2
fi
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import aimo_gguf' 2>/dev/null; then
    echo "convert.sh: aimo-gguf is not installed for $PYTHON: pip install '.[convert]' (or set PYTHON)" >&2
    exit 2
fi
exec "$PYTHON" -m aimo_gguf convert "$@"
