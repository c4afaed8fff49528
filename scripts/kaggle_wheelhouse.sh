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
# llama-cpp-python is llama.cpp's portable build (GGML_NATIVE=OFF, GGML_BACKEND_DL=ON,
# GGML_CPU_ALL_VARIANTS=ON): one CPU backend per instruction-set level, the best one chosen
# at run time, so a wheelhouse built on one machine runs on any x86-64 CPU. It is built
# with pip's cache off (pip keys built wheels by the sdist, not by CMAKE_ARGS: a native wheel
# cached there would be taken instead) and kept in ${AIMO_GGUF_CACHE:-~/.cache/aimo-gguf}/wheels
# under a key of the version, the Python, the machine and the CMake arguments.
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
        -h|--help) sed -n '2,26s/^# \{0,1\}//p' "$0"; exit 0 ;;
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
# The same in scripts/gpu_check.py's PORTABLE_CMAKE_ARGS.
PORTABLE="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DCMAKE_INSTALL_BINDIR=llama_cpp/lib"
if [[ $CPU -eq 1 ]]; then
    KIND=cpu
    ARGS="$PORTABLE -DLLAVA_BUILD=OFF"
    WHAT="CPU, portable"
else
    KIND="cuda-$ARCH"
    ARGS="$PORTABLE -DLLAVA_BUILD=OFF -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$ARCH"
    WHAT="CUDA for architectures $ARCH, portable CPU"
fi
KEY=$(printf '%s\n' "$VERSION" "$PYV" "$(uname -m)" "$ARGS" | sha256sum | cut -c1-16)
CACHE="${AIMO_GGUF_CACHE:-$HOME/.cache/aimo-gguf}/wheels/llama-cpp-python-$KEY"
rm -f "$OUT"/llama_cpp_python-*.whl
if compgen -G "$CACHE/llama_cpp_python-$VERSION-*.whl" >/dev/null; then
    echo "==> llama-cpp-python $VERSION ($WHAT) for Python $PYV: from $CACHE" >&2
else
    echo "==> llama-cpp-python $VERSION ($WHAT) for Python $PYV: building (about 30 minutes on 2 cores)" >&2
    BUILT=$(mktemp -d)
    CMAKE_ARGS="$ARGS" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        "$PYTHON" -m pip wheel --no-deps --no-cache-dir --no-binary llama-cpp-python \
        "llama-cpp-python==$VERSION" -w "$BUILT"
    mkdir -p "$CACHE"
    for wheel in "$BUILT"/llama_cpp_python-*.whl; do  # copied, then renamed: a half-written wheel is never cached
        cp "$wheel" "$CACHE/.$(basename "$wheel").part" && mv "$CACHE/.$(basename "$wheel").part" "$CACHE/$(basename "$wheel")"
    done
    rm -rf "$BUILT"
fi
cp "$CACHE"/llama_cpp_python-"$VERSION"-*.whl "$OUT"/

echo "==> aimo-gguf and its dependencies" >&2
# Pinned, so the resolver keeps the llama-cpp-python just built instead of a newer release.
"$PYTHON" -m pip wheel --find-links "$OUT" "$ROOT[kaggle]" "llama-cpp-python==$VERSION" -w "$OUT"
# What the resolver left in the folder must still be the portable wheel (not a native one from pip's cache).
VARIANTS=$("$PYTHON" -m zipfile -l "$OUT"/llama_cpp_python-*.whl | grep -o 'libggml-cpu-[a-z0-9_]*' | sort -u | wc -l)
if [[ $VARIANTS -lt 2 ]]; then
    echo "kaggle_wheelhouse.sh: the llama-cpp-python wheel holds $VARIANTS CPU backend variants, not a portable build" >&2
    exit 1
fi
echo "llama-cpp-python wheel: $VARIANTS CPU backend variants" >&2
echo "$KIND python$PYV llama-cpp-python==$VERSION portable cpu-variants=$VARIANTS" > "$OUT/BUILD"

if [[ $CHECK -eq 1 ]]; then
    echo "==> offline install check in a fresh virtual environment" >&2
    unset PYTHONPATH  # only what the wheelhouse installs: not a checkout on the path
    VENV=$(mktemp -d)
    trap 'rm -rf "$VENV"' EXIT
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --no-index --find-links "$OUT" 'aimo-gguf[kaggle]'
    "$VENV/bin/aimo-gguf" --version
    "$VENV/bin/aimo-gguf" models >/dev/null  # the package data (registry, texts) came along
    "$VENV/bin/python" -c 'import aimo_gguf.engine.llama, llama_cpp, polars, aimo_gguf.kaggle; print("llama-cpp-python", llama_cpp.__version__, "GPU offload:", bool(llama_cpp.llama_supports_gpu_offload()))'
    "$VENV/bin/python" -c 'import aimo_gguf.engine.llama, llama_cpp; print("CPU backend:", llama_cpp.llama_print_system_info().decode())'
    if [[ $KIND == cpu ]]; then  # a CUDA build cannot run without a GPU
        (cd "$VENV" && "$VENV/bin/aimo-gguf" run -q -n 1 --max-tokens 8 -o sub.csv && test "$(wc -l < sub.csv)" -gt 1)
        echo "offline install runs: $(($(wc -l < "$VENV/sub.csv") - 1)) answers written" >&2
    fi
fi
echo "wheelhouse: $OUT ($(ls "$OUT"/*.whl | wc -l) wheels, $(du -sh "$OUT" | cut -f1), $KIND, Python $PYV)" >&2
