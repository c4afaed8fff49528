#!/usr/bin/env python3
"""The GPU check: build, install, test and measure aimo-gguf on a CUDA machine with no network, in one call.

Here, on a machine where pip reaches the package index and aimo-gguf is installed::

    scripts/gpu_check.sh pack              # writes .gpu-check/bundle: trimmed llama-cpp-python source,
                                           # the wheels that machine lacks, a tokenizer-only GGUF

There, in the repository with ``.gpu-check/bundle`` carried beside it::

    scripts/gpu_check.sh run               # build, models, tests, bench -> $OUT/gpu-check.json
    scripts/gpu_check.sh run --dry-run     # check the bundle and the machine, print the plan, run nothing
    scripts/gpu_check.sh run --cpu         # the same with a CPU build: a rehearsal on any machine

The phases, each recorded in ``.gpu-check/work/<phase>.json`` once it succeeds (a phase already
recorded is skipped, so a call that ran out of time goes on where it stopped when called again on
the same machine; ``--fresh`` forgets them):

1. ``build``: llama-cpp-python from the carried source with CUDA for sm_90 (``--cuda-arch``) into a
   folder of its own (``pip install --target``, found through ``PYTHONPATH`` beside the machine's own
   packages and aimo-gguf's source), with the carried wheels, and llama.cpp's
   ``llama-batched-bench`` and ``llama-bench`` from the same CMake build;
2. ``models``: synthetic Qwen2.5-0.5B (for the tests), Qwen2.5-Math-7B and gpt-oss-20b shapes
   (``aimo-gguf synth``, with the carried tokenizer);
3. ``tests``: ``pytest -m gpu`` (real offload, -ngl -1, -ngl auto, the fall back down the layer
   ladder, the estimate against NVML);
4. ``bench``: for each large model, ``aimo-gguf bench`` with every layer on the GPU at batch 1
   (beside the ``create_completion`` loop) and 8, 32, 64, and ``llama-batched-bench`` on the same
   model and batches;
5. ``host``: the host work per sequence-step at gpt-oss's 201k vocabulary with the AIMO3 sampler
   (T 1, min-p 0.02, no top-k) and ``--vote entropy``, at batch 1, 8, 32, on each sampling path
   (``--samplers backend,batched,chain``: llama.cpp's samplers in the graph, NumPy over the rows,
   llama.cpp's chain per sequence), on the host-work model (one tiny layer, a real vocabulary,
   peaked logits: ``synth --like host-gpt-oss-201k --logit-std 8``) and on gpt-oss-20b, each beside
   ``llama-batched-bench``'s step on the same model and batches (which samples nothing).

Then ``gpu-check.json`` in ``--out`` (default ``$OUT``, else ``.gpu-check/out``) gathers the machine,
each phase's seconds, the test counts, and per model and batch: the engine's generation rate beside
llama-batched-bench's, NVML's memory growth beside the estimate. Logs go beside it.

This file uses the standard library alone: there, it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOT = REPO / ".gpu-check"  # ignored by git
BUNDLE = ROOT / "bundle"  # what to name in the device tool's carry (not ROOT: work/ must stay there)
WORK = ROOT / "work"
CARRY_LIMIT = 64 * 2**20  # what may travel to the machine: the working tree and the carried paths
BUDGET_S = 540  # one call: 10 minutes a command, less a margin for the report
CPU_BUDGET_S = 3600  # the rehearsal has no device clock to beat
WHEELS = ("gguf", "diskcache")  # what aimo-gguf and llama-cpp-python need that the machine lacks
# Expected on the machine (its image has them): checked before anything is built.
EXPECTED_THERE = ("numpy", "pandas", "pyarrow", "click", "jinja2", "tqdm", "psutil", "huggingface_hub",
                  "pynvml", "pytest", "scikit_build_core", "yaml", "setuptools", "wheel", "typing_extensions")
PHASES = ("build", "models", "tests", "bench", "host")
# (name, --like, what it is for); the CPU rehearsal writes only the first.
MODELS = (("qwen05", "Qwen2.5-0.5B-Instruct", "tests"), ("qwen7b", "Qwen2.5-Math-7B-Instruct", "bench"),
          ("gptoss20b", "gpt-oss-20b", "bench"))
BENCH_BATCHES = (8, 32, 64)
BENCH_TOKENS = 128
BENCH_PROMPT = 48
HOST_BATCHES = (1, 8, 32)
HOST_SAMPLERS = "backend,batched,chain"
HOST_TOKENS = 64
AIMO3_SAMPLER = ("--temperature", "1", "--top-k", "0", "--top-p", "1", "--min-p", "0.02", "--vote", "entropy")
HOST_LOGIT_STD = "8"  # aimo_gguf.synth.PEAKED_LOGIT_STD (this file imports nothing of aimo-gguf)
# Rough seconds of each phase on the H200 machine (16 cores), to stop before the time runs out.
PHASE_SECONDS = {"build": 330, "models": 200, "tests": 60, "bench": 150, "host": 300}
CPU_PHASE_SECONDS = {"build": 600, "models": 30, "tests": 30, "bench": 120, "host": 240}

# --- the trimmed source --------------------------------------------------------------------------------

# Inside the sdist's top folder: what a CUDA (or CPU) build of the binding and the two tools needs.
KEEP_TOP = {"CMakeLists.txt", "pyproject.toml", "README.md", "LICENSE.md", "PKG-INFO", "llama_cpp", "vendor"}
KEEP_LLAMA = {"CMakeLists.txt", "LICENSE", "cmake", "include", "src", "common", "ggml", "vendor", "licenses",
              "tools"}
KEEP_TOOLS = {"batched-bench", "llama-bench"}
KEEP_BACKENDS = {"ggml-cpu", "ggml-cuda", "ggml-blas"}  # other ggml/src/ggml-* folders are other devices
# llama.cpp's portable build: no -march=native, one CPU backend module per instruction-set level, chosen at
# run time (aimo_gguf.engine.backends loads them), installed beside the binding's libraries. The same in
# scripts/kaggle_wheelhouse.sh (tests/logic/test_gpu_check.py checks they agree).
PORTABLE_CMAKE_ARGS = ("-DGGML_NATIVE=OFF", "-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON",
                       "-DCMAKE_INSTALL_BINDIR=llama_cpp/lib")

TOOLS_CMAKE = """\
# aimo-gguf's GPU check: only the two benchmark tools of llama.cpp's tools/ (the rest was left out).
find_package(Threads REQUIRED)
llama_add_compile_flags()
add_subdirectory(batched-bench)
add_subdirectory(llama-bench)
"""


class CheckError(Exception):
    """A one-line reason the check cannot go on."""


def keep_member(parts: tuple[str, ...]) -> bool:
    """Whether a path of the sdist (its parts after the top folder) goes into the trimmed source."""
    if not parts or parts[0] not in KEEP_TOP:
        return False
    if parts[0] == "llama_cpp":
        return parts[1:2] != ("lib",)
    if parts[0] != "vendor":
        return True
    if len(parts) < 2 or parts[1] != "llama.cpp":
        return False
    rest = parts[2:]
    if not rest:
        return True
    if rest[0] not in KEEP_LLAMA:
        return False
    if rest[0] == "tools":
        return len(rest) == 1 or rest[1] in KEEP_TOOLS or rest[1:] == ("CMakeLists.txt",)
    if rest[0] == "ggml" and len(rest) > 2 and rest[1] == "src" and rest[2].startswith("ggml-"):
        backend = rest[2]
        is_folder = len(rest) > 3 or "." not in backend
        return not is_folder or backend in KEEP_BACKENDS
    return True


def trim_sdist(sdist: Path, out: Path) -> dict:
    """Write the trimmed source of ``sdist`` (a llama-cpp-python .tar.gz) to ``out`` (.tar.xz)."""
    kept = dropped = 0
    tools_cmake = None
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.part")
    with tarfile.open(sdist) as src, tarfile.open(staging, "w:xz", preset=9) as dst:
        top = None
        for member in src:
            parts = Path(member.name).parts
            if not parts or ".." in parts or member.name.startswith("/"):
                continue
            top = top or parts[0]
            if not (member.isfile() or member.isdir()) or not keep_member(parts[1:]):
                dropped += member.isfile()
                continue
            if parts[1:] == ("vendor", "llama.cpp", "tools", "CMakeLists.txt"):
                tools_cmake = member
                continue  # replaced below
            if member.isfile():
                dst.addfile(member, src.extractfile(member))
                kept += 1
            else:
                dst.addfile(member)
        if tools_cmake is None:
            raise CheckError(f"{sdist} has no vendor/llama.cpp/tools/CMakeLists.txt: not a llama-cpp-python sdist")
        data = TOOLS_CMAKE.encode()
        tools_cmake.size = len(data)
        dst.addfile(tools_cmake, io.BytesIO(data))
    os.replace(staging, out)
    return {"files_kept": kept, "files_dropped": dropped, "top": top}


# --- pack (here) -------------------------------------------------------------------------------------------


def run_cmd(cmd: list[str], *, log: Path | None = None, env: dict | None = None, cwd: Path | None = None,
            timeout: float | None = None) -> str:
    """Run ``cmd`` in a process group of its own; its output goes to ``log`` (appended) or is returned.
    A failure, or running past ``timeout`` seconds (the whole group is killed: no nvcc left behind),
    is a CheckError naming the command and its last line."""
    shown = " ".join(str(c) for c in cmd)
    name = Path(str(cmd[0])).name
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f:
            f.write(f"\n$ {shown}\n")
            f.flush()
            rc, _, _ = _wait([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                             timeout=timeout, name=name, log=log)
        if rc != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            raise CheckError(f"{name} failed (exit {rc}): {tail[0][:200]} (log: {log})")
        return ""
    rc, out, err = _wait([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd,
                         timeout=timeout, name=name, log=None)
    if rc != 0:
        tail = (err.strip() or out.strip()).splitlines()[-1:] or [""]
        raise CheckError(f"{shown[:120]} failed (exit {rc}): {tail[0][:200]}")
    return out


def _wait(cmd, *, stdout, stderr, env, cwd, timeout, name, log) -> tuple[int, str, str]:
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=env, cwd=cwd, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException as e:  # the time ran out, or Ctrl-C: nothing of the group may outlive it
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        if isinstance(e, subprocess.TimeoutExpired):
            where = f" (log: {log})" if log else ""
            raise CheckError(f"{name} ran past the {timeout:.0f} s left to this call and was stopped{where}: "
                             f"call again on the same machine to go on") from None
        raise
    return proc.returncode, out or "", err or ""


def tree_bytes(repo: Path = REPO) -> int:
    """Bytes of what the device tool sends besides the carried paths: tracked and untracked files git
    does not ignore."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    total = 0
    for name in out.decode().split("\0"):
        path = repo / name
        if name and path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_sdist(version: str, cache: Path) -> Path:
    """The llama-cpp-python ``version`` sdist, downloaded once with pip into ``cache``."""
    sdist = cache / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.is_file():
        say(f"fetching the llama-cpp-python {version} sdist...")
        cache.mkdir(parents=True, exist_ok=True)
        run_cmd([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                 f"llama-cpp-python=={version}", "-d", str(cache)])
    if not sdist.is_file():
        raise CheckError(f"pip downloaded no {sdist.name}")
    return sdist


def pack(bundle: Path = BUNDLE, *, sdist: Path | None = None, limit: int = CARRY_LIMIT) -> dict:
    """Write the bundle: trimmed source, wheels, tokenizer, manifest. Refuses a bundle that would not
    travel with the working tree."""
    from importlib.metadata import version

    try:
        from aimo_gguf.gguf.converter import cache_dir
        from aimo_gguf.gguf.synthetic import write_tokenizer
    except ImportError:
        raise CheckError("pack needs aimo-gguf installed here (pip install -e .)") from None
    binding = version("llama-cpp-python")
    staging = bundle.with_name(f".{bundle.name}.part")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "wheels").mkdir(parents=True)
    try:
        sdist = Path(sdist) if sdist else fetch_sdist(binding, cache_dir() / "sdist")
        say(f"trimming {sdist.name} (xz, about a minute)...")
        source = staging / f"llama-cpp-python-{binding}.tar.xz"
        trimmed = trim_sdist(sdist, source)
        pins = [f"{name}=={version(name)}" for name in WHEELS]
        say(f"downloading wheels: {', '.join(pins)}")
        run_cmd([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                 "--python-version", "3.12", "--implementation", "py", "-d", str(staging / "wheels"), *pins])
        write_tokenizer(None, staging / "tokenizer.gguf")
        files = {}
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            files[str(path.relative_to(staging))] = {"bytes": path.stat().st_size, "sha256": sha256(path)}
        manifest = {"llama_cpp_python": binding, "source": source.name, "top": trimmed["top"],
                    "files_kept": trimmed["files_kept"], "files_dropped": trimmed["files_dropped"],
                    "wheels": pins, "files": files}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        size = sum(f["bytes"] for f in files.values())
        tree = tree_bytes()
        if size + tree > limit:
            raise CheckError(f"the bundle ({size / 2**20:.1f} MiB) and the working tree ({tree / 2**20:.1f} MiB) "
                             f"are over the {limit / 2**20:.0f} MiB that can travel")
        shutil.rmtree(bundle, ignore_errors=True)
        os.replace(staging, bundle)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest["bundle_bytes"], manifest["tree_bytes"] = size, tree
    return manifest


# --- run (there) -------------------------------------------------------------------------------------------


class Check:
    """One run of the check: where things are, the time left, the figures so far."""

    def __init__(self, *, bundle: Path, work: Path, out: Path, cpu: bool, cuda_arch: str, budget: float,
                 phases: tuple[str, ...], models: tuple[str, ...] | None, dry_run: bool) -> None:
        self.bundle, self.work, self.out, self.cpu = bundle, work, out, cpu
        self.cuda_arch, self.phases, self.dry_run = cuda_arch, phases, dry_run
        self.t0, self.budget = time.monotonic(), budget
        # Installed with pip --target and found through PYTHONPATH, beside the machine's own packages: a
        # virtual environment made from that machine's python (itself one) would not see them.
        self.site = work / "site"
        self.python = Path(sys.executable)
        self.models = models or (tuple(m[0] for m in MODELS[:1]) if cpu else tuple(m[0] for m in MODELS))
        self.report: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu_rehearsal": cpu,
                             "phases": {}}
        self.expected = CPU_PHASE_SECONDS if cpu else PHASE_SECONDS

    # -- plumbing

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)

    def cmd(self, cmd: list[str], **kw) -> str:
        """``run_cmd`` within the time this call has left."""
        return run_cmd(cmd, timeout=kw.pop("timeout", max(10.0, self.left())), **kw)

    def stamp(self, phase: str) -> Path:
        return self.work / f"{phase}.json"

    def manifest(self) -> dict:
        path = self.bundle / "manifest.json"
        if not path.is_file():
            raise CheckError(f"no bundle at {self.bundle}: run 'scripts/gpu_check.sh pack' here first "
                             f"and carry .gpu-check/bundle")
        manifest = json.loads(path.read_text())
        for name, meta in manifest["files"].items():
            file = self.bundle / name
            if not file.is_file() or file.stat().st_size != meta["bytes"]:
                raise CheckError(f"the bundle is incomplete: {file} is missing or has the wrong size")
        return manifest

    def env(self) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(self.site), str(REPO)])  # the build, then aimo-gguf's source
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def aimo(self) -> list[str]:
        """The aimo-gguf command, from the source tree."""
        return [str(self.python), "-m", "aimo_gguf"]

    def tool_env(self) -> dict:
        """The environment for llama.cpp's tools: every folder of the build holding a shared library on
        the loader's path (the tools link libllama, which links the ggml libraries beside it)."""
        env = self.env()
        folders = sorted({str(p.parent) for p in (self.work / "cmake-build").rglob("lib*.so*")})
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*folders, env.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
        return env

    def model_path(self, name: str) -> Path:
        return self.work / "models" / f"{name}.gguf"

    # -- checks before anything runs

    def preflight(self) -> dict:
        manifest = self.manifest()
        found = {"python": platform.python_version(), "cores": os.cpu_count()}
        missing = [tool for tool in ("cmake",) if shutil.which(tool) is None]
        if not self.cpu:
            if find_nvcc() is None:
                missing.append("nvcc")
            smi = shutil.which("nvidia-smi")
            if smi:
                try:
                    found["gpu"] = self.cmd([smi, "--query-gpu=name,memory.total,driver_version",
                                             "--format=csv,noheader"], timeout=30).strip()
                except CheckError as e:
                    found["gpu"] = f"nvidia-smi failed: {e}"
        if missing:
            raise CheckError(f"this machine lacks {', '.join(missing)}")
        lacking = []
        for module in EXPECTED_THERE:
            probe = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, check=False)
            if probe.returncode != 0:
                lacking.append(module)
        if lacking:
            raise CheckError(f"this Python ({sys.executable}) lacks {', '.join(lacking)}: carry their wheels in "
                             f".gpu-check/bundle/wheels (see WHEELS in scripts/gpu_check.py)")
        free = shutil.disk_usage(self.work.parent if not self.work.exists() else self.work).free
        found["disk_free_gib"] = round(free / 2**30, 1)
        found["llama_cpp_python"] = manifest["llama_cpp_python"]
        return found

    def plan(self) -> list[str]:
        lines = []
        for phase in self.phases:
            done = self.stamp(phase).is_file()
            lines.append(f"{phase}: {'done (recorded in ' + str(self.stamp(phase)) + ')' if done else 'to run'}"
                         f", about {self.expected[phase]} s")
        lines.append(f"models: {', '.join(self.models)}; out: {self.out}; budget {self.budget:.0f} s")
        return lines

    # -- the phases

    def build(self) -> dict:
        manifest = self.manifest()
        log = self.out / "build.log"
        src_root = self.work / "src"
        top = src_root / manifest["top"]
        unpacked = src_root / ".unpacked"  # written last: a call killed while unpacking starts over
        done = unpacked.read_text().strip() if unpacked.is_file() else ""
        if done != manifest["source"]:
            shutil.rmtree(src_root, ignore_errors=True)
            src_root.mkdir(parents=True)
            say(f"unpacking {manifest['source']}")
            with tarfile.open(self.bundle / manifest["source"]) as tar:
                for member in tar:
                    parts = Path(member.name).parts
                    if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
                        continue
                    tar.extract(member, src_root)
            unpacked.write_text(manifest["source"])
        pip = [str(self.python), "-m", "pip", "install", "--no-index", "--no-deps", "--no-build-isolation",
               "--disable-pip-version-check", "--upgrade", "--target", str(self.site)]
        self.cmd([*pip, *sorted(str(p) for p in (self.bundle / "wheels").glob("*.whl"))], log=log)
        cmake_args = [*PORTABLE_CMAKE_ARGS, "-DLLAVA_BUILD=OFF", "-DLLAMA_BUILD_TOOLS=ON",
                      "-DLLAMA_TOOLS_INSTALL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                      "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF"]
        if not self.cpu:
            cmake_args += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={self.cuda_arch}"]
        env = self.env()
        env["CMAKE_ARGS"] = " ".join(cmake_args)
        env["CMAKE_BUILD_PARALLEL_LEVEL"] = str(os.cpu_count() or 4)
        if not self.cpu:
            env["PATH"] = f"{Path(find_nvcc()).parent}{os.pathsep}{env['PATH']}"
        build_dir = self.work / "cmake-build"
        say(f"building llama-cpp-python {manifest['llama_cpp_python']} "
            f"({'CPU' if self.cpu else 'CUDA sm_' + self.cuda_arch}) and llama.cpp's bench tools; log: {log}")
        t0 = time.monotonic()
        self.cmd([*pip, "-v", f"--config-settings=build-dir={build_dir}", str(top)], log=log, env=env)
        build_s = time.monotonic() - t0
        tools = {}
        for tool in ("llama-batched-bench", "llama-bench"):
            hits = sorted(p for p in build_dir.rglob(tool) if p.is_file() and os.access(p, os.X_OK))
            if not hits:
                raise CheckError(f"the build made no {tool} (log: {log})")
            tools[tool] = str(hits[0])
            self.cmd([tools[tool], "--version"], log=log, env=self.tool_env())  # it runs: its libraries are found
        # aimo_gguf.engine.llama first: it loads the portable build's backend modules
        code = ("import json, aimo_gguf.engine.llama, llama_cpp, aimo_gguf; print(json.dumps([llama_cpp.__version__, "
                "bool(llama_cpp.llama_supports_gpu_offload()), aimo_gguf.__version__]))")
        probe = self.cmd([str(self.python), "-c", code], env=self.env())
        binding, offload, ours = json.loads(probe.strip().splitlines()[-1])
        if offload == self.cpu:
            raise CheckError("the CPU build can offload to a GPU" if offload else
                             "the CUDA build cannot offload to the GPU (is the driver visible? see the build log)")
        return {"seconds": round(build_s, 1), "llama_cpp_python": binding, "gpu_offload": offload,
                "aimo_gguf": ours, "tools": tools, "cmake_args": cmake_args}

    def make_models(self) -> dict:
        made = {}
        likes = {name: like for name, like, _ in MODELS}
        for name in self.models:
            path = self.model_path(name)
            t0 = time.monotonic()
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                say(f"writing synthetic {likes[name]} to {path}")
                self.cmd([*self.aimo(), "synth", "--like", likes[name], "-o", str(path),
                         "--tokenizer", str(self.bundle / "tokenizer.gguf"), "-t", str(os.cpu_count() or 4)],
                        log=self.out / "models.log", env=self.env())
            made[name] = {"like": likes[name], "path": str(path), "bytes": path.stat().st_size,
                          "seconds": round(time.monotonic() - t0, 1)}
        return made

    def tests(self) -> dict:
        junit = self.out / "gpu-tests.xml"
        env = self.env()
        env["AIMO_GGUF_GPU_MODEL"] = str(self.model_path(self.models[0]))
        cmd = [str(self.python), "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", "-rs", "-q",
               f"--junitxml={junit}", str(REPO / "tests" / "model" / "test_gpu.py")]
        log = self.out / "tests.log"
        junit.unlink(missing_ok=True)
        with log.open("w") as f:
            rc, _, _ = _wait(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                             timeout=max(10.0, self.left()), name="pytest", log=log)
        return judge_tests(rc, junit_counts(junit), junit_failures(junit), cpu=self.cpu)

    def bench(self) -> dict:
        build = json.loads(self.stamp("build").read_text())
        figures = {}
        bench_models = [m for m, _, use in MODELS if use == "bench" and m in self.models] or list(self.models[:1])
        tokens = 16 if self.cpu else BENCH_TOKENS
        batches = (2, 4) if self.cpu else BENCH_BATCHES
        problems = max(batches)
        aimo = self.aimo()
        ngl = "0" if self.cpu else "-1"
        for name in bench_models:
            model = self.model_path(name)
            log = self.out / f"bench-{name}.log"
            one = self.out / f"bench-{name}-b1.json"
            many = self.out / f"bench-{name}.json"
            say(f"{name}: aimo-gguf bench, batch 1 beside the create_completion loop")
            self.cmd([*aimo, "bench", "-m", str(model), "-ngl", ngl, "--batch-sizes", "1", "--problems", "8",
                     "--max-tokens", str(tokens), "-q", "--json-file", str(one)], log=log, env=self.env())
            say(f"{name}: aimo-gguf bench, batch {', '.join(map(str, batches))}")
            self.cmd([*aimo, "bench", "-m", str(model), "-ngl", ngl, "--batch-sizes", ",".join(map(str, batches)),
                     "--problems", str(problems), "--max-tokens", str(tokens), "--no-baseline", "-q",
                     "--json-file", str(many)], log=log, env=self.env())
            rows = json.loads(one.read_text())["rows"] + json.loads(many.read_text())["rows"]
            baseline = json.loads(one.read_text()).get("baseline")
            say(f"{name}: llama-batched-bench")
            npl = ",".join(str(b) for b in (1, *batches))
            jsonl = self.out / f"batched-bench-{name}.jsonl"
            ctx = (BENCH_PROMPT + tokens + 16) * max(batches)
            out = self.cmd([build["tools"]["llama-batched-bench"], "-m", str(model), "-ngl", "0" if self.cpu else "99",
                           "-c", str(ctx), "-b", "2048", "-ub", "512", "-npp", str(BENCH_PROMPT), "-ntg", str(tokens),
                           "-npl", npl, "--output-format", "jsonl"], env=self.tool_env())
            jsonl.write_text(out)
            reference = parse_batched_bench(out)
            if not reference:
                raise CheckError(f"no figures in llama-batched-bench's output ({jsonl})")
            figures[name] = summarize_bench(rows, baseline, reference)
        return figures

    def host(self) -> dict:
        """Host work per sequence-step with the AIMO3 sampler and confidence, per sampling path, beside
        llama-batched-bench's step."""
        build = json.loads(self.stamp("build").read_text())
        tiny = self.work / "models" / "host201k.gguf"
        if not tiny.is_file():
            say(f"writing the host-work model to {tiny}")
            self.cmd([*self.aimo(), "synth", "--like", "host-gpt-oss-201k", "--logit-std", HOST_LOGIT_STD, "-o",
                      str(tiny), "--tokenizer", str(self.bundle / "tokenizer.gguf")], log=self.out / "models.log",
                     env=self.env())
        models = {"host201k": tiny}
        if "gptoss20b" in self.models and not self.cpu:
            models["gptoss20b"] = self.model_path("gptoss20b")
        tokens = 16 if self.cpu else HOST_TOKENS
        batches = (1, 2) if self.cpu else HOST_BATCHES
        ngl = "0" if self.cpu else "-1"
        figures = {}
        for name, model in models.items():
            out = self.out / f"host-{name}.json"
            say(f"{name}: host work per sequence-step, samplers {HOST_SAMPLERS}, batch {', '.join(map(str, batches))}")
            self.cmd([*self.aimo(), "bench", "-m", str(model), "-ngl", ngl, "--batch-sizes", ",".join(map(str, batches)),
                      "--problems", str(max(batches)), "--max-tokens", str(tokens), "--no-baseline",
                      "--samplers", HOST_SAMPLERS, *AIMO3_SAMPLER, "-q", "--json-file", str(out)],
                     log=self.out / f"host-{name}.log", env=self.env())
            ctx = (BENCH_PROMPT + tokens + 16) * max(batches)
            text = self.cmd([build["tools"]["llama-batched-bench"], "-m", str(model), "-ngl", "0" if self.cpu else "99",
                             "-c", str(ctx), "-b", "2048", "-ub", "512", "-npp", str(BENCH_PROMPT), "-ntg", str(tokens),
                             "-npl", ",".join(map(str, batches)), "--output-format", "jsonl"], env=self.tool_env())
            (self.out / f"host-batched-bench-{name}.jsonl").write_text(text)
            figures[name] = summarize_host(json.loads(out.read_text())["rows"], parse_batched_bench(text))
        return figures

    # -- the whole run

    def run(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        try:
            self.report["machine"] = self.preflight()
        except CheckError as e:
            self.report["failed"] = "preflight"
            self.report["phases"]["preflight"] = {"error": str(e)}
            self.write_report(quiet=True)  # the error line says it all; the file goes back with $OUT
            raise
        if self.dry_run:
            for line in self.plan():
                print(line)
            self.report["dry_run"] = self.plan()
            self.write_report()
            return self.report
        steps = {"build": self.build, "models": self.make_models, "tests": self.tests, "bench": self.bench,
                 "host": self.host}
        for phase in self.phases:
            stamp = self.stamp(phase)
            if stamp.is_file():
                self.report["phases"][phase] = {**json.loads(stamp.read_text()), "recorded": True}
                say(f"{phase}: done before ({stamp})")
                continue
            if self.left() < self.expected[phase]:
                self.report["stopped"] = (f"{self.left():.0f} s left, {phase} takes about {self.expected[phase]} s: "
                                          f"call again on the same machine to go on")
                say(self.report["stopped"])
                break
            say(f"{phase}: starting ({self.left():.0f} s left)")
            t0 = time.monotonic()
            try:
                result = steps[phase]()
            except Exception as e:  # noqa: BLE001 - any failure of a phase goes into the report
                message = str(e) if isinstance(e, CheckError) else f"{type(e).__name__}: {e}"
                self.report["phases"][phase] = {"error": message, "seconds": round(time.monotonic() - t0, 1)}
                self.report["failed"] = phase
                say(f"{phase}: failed: {message}")
                break
            result = {"seconds_total": round(time.monotonic() - t0, 1), **result}
            self.report["phases"][phase] = result
            if phase == "tests" and result.get("failed"):
                self.report["tests_failed"] = result["failed"]  # the bench still runs; not recorded as done
            else:
                stamp.write_text(json.dumps(result, indent=2))
            say(f"{phase}: done in {result['seconds_total']:.0f} s")
            self.write_report(quiet=True)  # after each phase: a call killed at its limit leaves the figures so far
        self.write_report()
        return self.report

    def write_report(self, *, quiet: bool = False) -> None:
        self.report["seconds"] = round(time.monotonic() - self.t0, 1)
        path = self.out / "gpu-check.json"
        path.write_text(json.dumps(self.report, indent=2))
        if not quiet:
            say(f"figures: {path}")


# --- reading results -----------------------------------------------------------------------------------


def parse_batched_bench(text: str) -> dict[int, float]:
    """S_TG (generated tokens/s) per batch from llama-batched-bench's output: its JSON lines, or its
    markdown table (| PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | ...)."""
    speeds = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                row = json.loads(line)
                speeds[int(row["pl"])] = float(row["speed_tg"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) >= 8 and cells[2].isdigit():
                try:
                    speeds[int(cells[2])] = float(cells[7])
                except ValueError:
                    continue
    return speeds


def junit_counts(path: Path) -> dict:
    if not path.is_file():
        return {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


def junit_failures(path: Path) -> list[str]:
    if not path.is_file():
        return []
    names = []
    for case in ET.parse(path).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            names.append(case.get("name", "?"))
    return names


def judge_tests(rc: int, counts: dict, failures: list[str], *, cpu: bool) -> dict:
    """The tests phase's result; ``failed`` is set unless pytest ran them and all passed. On a GPU every
    test must run (a skip there means the build or NVML is missing); on a CPU build they all skip."""
    result = {**counts, "exit": rc}
    ran = counts["tests"] - counts["skipped"]
    if rc != 0 or counts["failures"] or counts["errors"]:
        result["failed"] = failures or [f"pytest exited {rc}" + (" (no junit report: it crashed?)"
                                                                  if not counts["tests"] else "")]
    elif not cpu and (counts["tests"] == 0 or ran < counts["tests"]):
        result["failed"] = [f"{counts['skipped']} of {counts['tests']} GPU tests skipped on the GPU (see tests.log)"]
    return result


def summarize_bench(rows: list[dict], baseline: dict | None, reference: dict[int, float]) -> dict:
    """Per batch: the engine's generation rate beside llama-batched-bench's, and GPU memory beside the
    estimate; the best speed-up over the create_completion loop."""
    out = {"batches": [], "loop_tokens_per_s": baseline and baseline.get("generated_tokens_per_s")}
    for row in rows:
        b = row["batch_size"]
        step_rate = b * 1000 / row["step_ms"] if row.get("step_ms") else None
        ref = reference.get(b)
        growth, est = row.get("gpu_growth_mb"), row.get("estimate_gpu_mb")
        out["batches"].append({
            "batch": b, "generated_tokens_per_s": row.get("generated_tokens_per_s"),
            "decode_tokens_per_s": step_rate and round(step_rate, 1), "llama_batched_bench_tg": ref,
            "ratio": round(step_rate / ref, 3) if step_rate and ref else None,
            "gpu_growth_mib": growth, "estimate_gpu_mib": est,
            "estimate_error": round((est - growth) / growth, 3) if growth and est else None,
            "rss_growth_mib": row.get("rss_growth_mb"), "estimate_mib": row.get("estimate_mb"),
            "error": row.get("error"),
        })
    loop = out["loop_tokens_per_s"]
    rates = [r["generated_tokens_per_s"] for r in out["batches"] if r["generated_tokens_per_s"]]
    out["best_speedup"] = round(max(rates) / loop, 2) if loop and rates else None
    return out


def summarize_host(rows: list[dict], reference: dict[int, float]) -> list[dict]:
    """Per engine row (sampling path and batch): its host work per sequence-step from its counters, and
    its generation step beside llama-batched-bench's at that batch (which decodes and samples nothing):
    the difference per sequence is the host work wherever it ran, sampling inside the decode included."""
    out = []
    for row in rows:
        b, step = row["batch_size"], row.get("step_ms")
        ref = reference.get(b)
        ref_step = 1000 * b / ref if ref else None
        out.append({
            "sampler": row.get("sampler"), "batch": b, "host_ms": row.get("host_ms"), "draw_ms": row.get("draw_ms"),
            "confidence_ms": row.get("confidence_ms"), "rest_ms": row.get("rest_ms"), "step_ms": step,
            "llama_batched_bench_step_ms": ref_step and round(ref_step, 3),
            "step_over_reference_ms_per_seq": round((step - ref_step) / b, 4) if step and ref_step else None,
            "generated_tokens_per_s": row.get("generated_tokens_per_s"), "error": row.get("error"),
        })
    return out


def find_nvcc() -> str | None:
    """CUDA's compiler: on the PATH, or where CUDA installs it."""
    found = shutil.which("nvcc")
    if found is None and Path("/usr/local/cuda/bin/nvcc").is_file():
        found = "/usr/local/cuda/bin/nvcc"
    return found


def say(text: str) -> None:
    print(f"gpu-check: {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="write .gpu-check/bundle (here)")
    p.add_argument("--sdist", type=Path, help="a llama-cpp-python sdist to trim [default: fetched with pip]")
    p.add_argument("--bundle", type=Path, default=BUNDLE)
    r = sub.add_parser("run", help="build, models, tests, bench, host (there)")
    r.add_argument("--bundle", type=Path, default=BUNDLE)
    r.add_argument("--work", type=Path, default=WORK)
    r.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "out")
    r.add_argument("--cpu", action="store_true", help="a CPU build: rehearse the check on any machine")
    r.add_argument("--cuda-arch", default="90", help="CMAKE_CUDA_ARCHITECTURES [default: 90, Hopper]")
    r.add_argument("--budget", type=float, default=None,
                   help=f"seconds this call may use [default: {BUDGET_S}; {CPU_BUDGET_S} with --cpu]")
    r.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, of {', '.join(PHASES)}")
    r.add_argument("--models", default=None, help=f"comma-separated, of {', '.join(m[0] for m in MODELS)}")
    r.add_argument("--fresh", action="store_true", help="forget the phases recorded by earlier calls")
    r.add_argument("--dry-run", action="store_true", help="check the bundle and the machine, print the plan")
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            manifest = pack(args.bundle, sdist=args.sdist)
            print(f"{args.bundle}: {manifest['bundle_bytes'] / 2**20:.1f} MiB "
                  f"(+ working tree {manifest['tree_bytes'] / 2**20:.1f} MiB, limit {CARRY_LIMIT / 2**20:.0f} MiB)")
            return 0
        phases = tuple(p for p in args.phases.split(",") if p)
        unknown = [p for p in phases if p not in PHASES]
        if unknown:
            raise CheckError(f"unknown phase {unknown[0]!r}: choose from {', '.join(PHASES)}")
        models = tuple(m for m in args.models.split(",") if m) if args.models else None
        names = {m[0] for m in MODELS}
        if models and any(m not in names for m in models):
            raise CheckError(f"unknown model {next(m for m in models if m not in names)!r}: "
                             f"choose from {', '.join(sorted(names))}")
        if args.fresh and not args.dry_run:
            for phase in PHASES:
                (args.work / f"{phase}.json").unlink(missing_ok=True)
        check = Check(bundle=args.bundle, work=args.work, out=args.out, cpu=args.cpu, cuda_arch=args.cuda_arch,
                      budget=args.budget or (CPU_BUDGET_S if args.cpu else BUDGET_S), phases=phases, models=models,
                      dry_run=args.dry_run)
        report = check.run()
        return 1 if report.get("failed") or report.get("tests_failed") else 0
    except CheckError as e:
        print(f"gpu-check: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gpu-check: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
