#!/usr/bin/env bash
# Build llama.cpp's reference tools (llama-batched-bench, llama-bench) from the
# llama.cpp source vendored in the llama-cpp-python sdist of the installed
# version, so benchmarks compare against exactly the same llama.cpp.
#
#   scripts/build_llama_tools.sh [OUT_DIR]     (default: .bench/)
#
# Prints the folder holding the binaries. Nothing here is committed: OUT_DIR
# is ignored by git.
set -euo pipefail

out="${1:-.bench}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
version="$(python -c 'import llama_cpp; print(llama_cpp.__version__)')"
src="$out/llama_cpp_python-$version"

if [ ! -x "$out/bin/llama-batched-bench" ]; then
    if [ ! -d "$src" ]; then
        echo "fetching the llama-cpp-python $version sdist..." >&2
        python -m pip download --quiet --no-deps --no-binary :all: -d "$out" "llama-cpp-python==$version"
        tar -xzf "$out/llama_cpp_python-$version.tar.gz" -C "$out"
    fi
    echo "building llama-batched-bench and llama-bench (a few minutes on 2 cores)..." >&2
    cmake -S "$src/vendor/llama.cpp" -B "$src/build" -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >&2
    cmake --build "$src/build" -j "$(nproc)" --target llama-batched-bench llama-bench >&2
    mkdir -p "$out/bin"
    cp "$src/build/bin/llama-batched-bench" "$src/build/bin/llama-bench" "$out/bin/"
fi
echo "$out/bin"
