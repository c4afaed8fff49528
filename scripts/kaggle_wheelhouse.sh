#!/usr/bin/env bash
# Build a folder of wheels for installing aimo-gguf offline in a Kaggle notebook.
#
#   scripts/kaggle_wheelhouse.sh [--out wheelhouse] [--cuda-arch 75] [--cpu] [--no-check]
#
#   --cuda-arch A  build llama-cpp-python with CUDA for these GPU architectures
#                  (CMAKE_CUDA_ARCHITECTURES: 60 P100, 75 T4, 90 H100; "75;90" for both).
#                  Needs nvcc and cuBLAS: run it in a Kaggle GPU notebook with internet on,
#                  so the CUDA version matches. Default: 90 (AIMO3's H100) when CUDA is
#                  found, else a CPU build.
#   --cpu          build the CPU llama-cpp-python (also what happens without nvcc)
#   --no-check     skip the offline install check in a fresh virtual environment
#
# Run it with the Python minor version of the Kaggle image ($PYTHON, default python3):
# wheels of compiled packages only install on the Python they were built for.
# Upload the folder as a Kaggle dataset, then in the notebook:
#   !pip install --no-index --find-links /kaggle/input/<dataset> 'aimo-gguf[kaggle]'
set -euo pipefail

OUT=wheelhouse
ARCH=""
CPU=0
CHECK=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) OUT=$2; shift 2 ;;
        --cuda-arch) ARCH=$2; shift 2 ;;
        --cpu) CPU=1; shift ;;
        --no-check) CHECK=0; shift ;;
        -h|--help) sed -n '2,19s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "kaggle_wheelhouse.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

PYTHON=${PYTHON:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
VERSION=$(sed -n 's/^ *llama-cpp-python *>= *\([0-9.]*\).*/\1/p' "$ROOT/setup.cfg")
PYV=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')

cuda_ready() {  # nvcc and the cuBLAS headers that llama.cpp's CUDA backend needs
    command -v nvcc >/dev/null || return 1
    local home
    home=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
    [[ -f $home/include/cublas_v2.h || -f ${CUDA_HOME:-/nonexistent}/include/cublas_v2.h ]]
}
if [[ $CPU -eq 0 ]] && ! cuda_ready; then
    if [[ -n $ARCH ]]; then
        echo "kaggle_wheelhouse.sh: --cuda-arch needs nvcc and cuBLAS (cublas_v2.h), not found here" >&2
        exit 2
    fi
    echo "kaggle_wheelhouse.sh: no CUDA toolkit with cuBLAS here: building the CPU llama-cpp-python" >&2
    CPU=1
fi
if [[ $CPU -eq 0 && -z $ARCH ]]; then
    ARCH=90
fi
if [[ $CPU -eq 1 ]]; then
    KIND=cpu
    echo "==> llama-cpp-python $VERSION (CPU) for Python $PYV" >&2
    rm -f "$OUT"/llama_cpp_python-*.whl
    "$PYTHON" -m pip wheel --no-deps "llama-cpp-python==$VERSION" -w "$OUT"
else
    KIND="cuda-$ARCH"
    echo "==> llama-cpp-python $VERSION (CUDA, architectures $ARCH) for Python $PYV: tens of minutes" >&2
    rm -f "$OUT"/llama_cpp_python-*.whl
    CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$ARCH" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        "$PYTHON" -m pip wheel --no-deps --no-cache-dir --no-binary llama-cpp-python \
        "llama-cpp-python==$VERSION" -w "$OUT"
fi

echo "==> aimo-gguf and its dependencies" >&2
# Pinned, so the resolver keeps the llama-cpp-python just built instead of a newer release.
"$PYTHON" -m pip wheel --find-links "$OUT" "$ROOT[kaggle]" "llama-cpp-python==$VERSION" -w "$OUT"
echo "$KIND python$PYV llama-cpp-python==$VERSION" > "$OUT/BUILD"

if [[ $CHECK -eq 1 ]]; then
    echo "==> offline install check in a fresh virtual environment" >&2
    VENV=$(mktemp -d)
    trap 'rm -rf "$VENV"' EXIT
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --no-index --find-links "$OUT" 'aimo-gguf[kaggle]'
    "$VENV/bin/aimo-gguf" --version
    "$VENV/bin/aimo-gguf" models >/dev/null  # the package data (registry, texts) came along
    "$VENV/bin/python" -c 'import llama_cpp, polars, aimo_gguf.kaggle; print("llama-cpp-python", llama_cpp.__version__, "GPU offload:", bool(llama_cpp.llama_supports_gpu_offload()))'
    if [[ $KIND == cpu ]]; then  # a CUDA build cannot run without a GPU
        (cd "$VENV" && "$VENV/bin/aimo-gguf" run -q -n 1 --max-tokens 8 -o sub.csv && test "$(wc -l < sub.csv)" -gt 1)
        echo "offline install runs: $(($(wc -l < "$VENV/sub.csv") - 1)) answers written" >&2
    fi
fi
echo "wheelhouse: $OUT ($(ls "$OUT"/*.whl | wc -l) wheels, $(du -sh "$OUT" | cut -f1), $KIND, Python $PYV)" >&2
