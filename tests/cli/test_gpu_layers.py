"""-ngl auto: the most layers that fit the GPU's free memory (or --max-memory), against fake devices."""

from __future__ import annotations

import pytest

from aimo_gguf.config import RunConfig
from aimo_gguf.engine import llama
from aimo_gguf.errors import InputError
from aimo_gguf.fit import gpus as devices
from aimo_gguf.fit import plan as loading
from aimo_gguf.fit.memory import estimate, read_shape
from aimo_gguf.gguf.files import default_model_path

MiB = 2**20


@pytest.fixture
def gpu(monkeypatch):
    """A GPU build whose device reports ``free`` bytes free."""
    state = {"free": 0}
    monkeypatch.setattr(llama, "supports_gpu_offload", lambda: True)
    monkeypatch.setattr(devices, "gpu_memory", lambda: (80 * 2**30, 0, state["free"]))
    return state


@pytest.mark.parametrize("free_mib", [520, 600, 700, 900, 4000])
def test_auto_offloads_what_the_free_memory_holds(gpu, free_mib):
    gpu["free"] = free_mib * MiB
    path = default_model_path()
    config = RunConfig(n_gpu_layers="auto", batch_size=8, max_tokens=512)
    layers = loading.plan_load(config, path).n_gpu_layers
    budget = free_mib * MiB - loading.GPU_RUNTIME_RESERVE
    shape = read_shape(str(path))
    if layers != 0:
        assert estimate(shape, ctx=config.sequence_ctx, batch_size=8, n_gpu_layers=layers).gpu <= budget
    if layers != -1:  # one more layer would not fit
        more = layers + 1
        assert estimate(shape, ctx=config.sequence_ctx, batch_size=8, n_gpu_layers=more).gpu > budget
    assert (layers == 0) == (free_mib == 520) and (layers == -1) == (free_mib >= 900)


def test_max_memory_is_the_budget_when_given(gpu):
    gpu["free"] = 10 * 2**30
    config = RunConfig(n_gpu_layers="auto", batch_size=4, max_memory="200MiB")
    plan = loading.plan_load(config, default_model_path())
    assert 0 <= plan.n_gpu_layers < 30
    assert "--max-memory" in " ".join(plan.notes)


def test_a_cpu_build_offloads_nothing(monkeypatch):
    monkeypatch.setattr(llama, "supports_gpu_offload", lambda: False)
    plan = loading.plan_load(RunConfig(n_gpu_layers="auto"), default_model_path())
    assert plan.n_gpu_layers == 0
    assert "cannot offload: 0 layers" in " ".join(plan.notes)


def test_without_nvml_auto_needs_max_memory(monkeypatch):
    monkeypatch.setattr(llama, "supports_gpu_offload", lambda: True)
    monkeypatch.setattr(devices, "gpu_memory", lambda: None)
    with pytest.raises(InputError, match="nvidia-ml-py"):
        loading.plan_load(RunConfig(n_gpu_layers="auto"), default_model_path())


def test_auto_layers_then_auto_batch_fill_the_rest(gpu):
    gpu["free"] = 2 * 2**30
    config = RunConfig(n_gpu_layers="auto", batch_size="auto", max_tokens=512)
    plan = loading.plan_load(config, default_model_path())
    assert plan.n_gpu_layers == -1  # with one sequence every layer fits
    batch = plan.batch_size
    shape = read_shape(str(default_model_path()))
    budget = gpu["free"] - loading.GPU_RUNTIME_RESERVE
    assert estimate(shape, ctx=config.sequence_ctx, batch_size=batch, n_gpu_layers=-1).gpu <= budget
    assert estimate(shape, ctx=config.sequence_ctx, batch_size=batch + 1, n_gpu_layers=-1).gpu > budget


def test_the_flag_takes_auto(runner, monkeypatch):
    from aimo_gguf.cli import cli

    monkeypatch.setattr(llama, "supports_gpu_offload", lambda: False)
    result = runner.invoke(cli, ["info", "-ngl", "auto", "--json"])
    assert result.exit_code == 0, result.output
    assert '"n_gpu_layers_requested": "auto"' in result.stdout
    bad = runner.invoke(cli, ["info", "-ngl", "most"])
    assert bad.exit_code == 2 and "'most' is neither a number nor 'auto'" in bad.stderr


@pytest.mark.parametrize("sizes_mib", [[300], [700], [4000], [400, 400], [300, 900], [250, 250, 250]])
@pytest.mark.parametrize("split_mode", ["layer", "none"])
def test_gpus_asked_about_are_planned_as_the_gpus_nvml_sees(monkeypatch, sizes_mib, split_mode):
    """info --gpus plans hypothetical GPUs with run's own rule: the same layers, batch and shares as NVML
    reporting those free sizes would give."""
    sizes = [s * MiB for s in sizes_mib]
    path = default_model_path()
    config = RunConfig(n_gpu_layers="auto", batch_size="auto", max_tokens=256, split_mode=split_mode)
    asked = loading.plan_load(config, path, gpus=sizes)
    monkeypatch.setattr(llama, "supports_gpu_offload", lambda: True)
    monkeypatch.setattr(devices, "gpu_memories", lambda: [(s, 0, s) for s in sizes])
    seen = loading.plan_load(config, path)
    assert (asked.n_gpu_layers, asked.batch_size, asked.shares) == (seen.n_gpu_layers, seen.batch_size, seen.shares)
