"""The split options and --ray at the edges: llama.cpp's parameters, the per-GPU tables, one-line errors."""

from __future__ import annotations

import json
import sys

import pytest
from helpers import assert_one_line_error

from aimo_gguf.cli import cli
from aimo_gguf.engine import llama


def test_split_options_reach_llama_model_params():
    params, array = llama.model_params(n_gpu_layers=-1, split_mode="row", tensor_split=(3.0, 1.0), main_gpu=1)
    assert params.split_mode == llama.llama_cpp.LLAMA_SPLIT_MODE_ROW
    assert params.main_gpu == 1 and params.n_gpu_layers == -1
    n = llama.max_devices()
    assert len(array) == n  # llama.cpp reads llama_max_devices() floats
    assert [params.tensor_split[i] for i in range(2)] == [3.0, 1.0]
    assert all(params.tensor_split[i] == 0.0 for i in range(2, n))


@pytest.mark.parametrize("mode, value", [("none", "LLAMA_SPLIT_MODE_NONE"), ("layer", "LLAMA_SPLIT_MODE_LAYER"),
                                         ("row", "LLAMA_SPLIT_MODE_ROW")])
def test_each_split_mode_is_llama_cpp_s_enum(mode, value):
    params, array = llama.model_params(split_mode=mode)
    assert params.split_mode == getattr(llama.llama_cpp, value) and array is None
    assert not params.tensor_split  # NULL: llama.cpp's split by free memory


def test_more_shares_than_llama_cpp_has_devices_is_one_line_before_a_load():
    from aimo_gguf.engine.limits import check_tensor_split
    from aimo_gguf.errors import InputError

    with pytest.raises(InputError, match="at most"):
        check_tensor_split((1.0,) * (llama.max_devices() + 1))
    check_tensor_split((1.0,) * llama.max_devices())  # every device a share: fine


def test_the_run_config_hands_the_split_to_the_engine():
    from aimo_gguf.config import RunConfig
    from aimo_gguf.fit.plan import engine_options

    options = engine_options(RunConfig(split_mode="none", tensor_split="3,1", main_gpu=1), "m.gguf", batch_size=4)
    assert (options.split_mode, options.tensor_split, options.main_gpu) == ("none", (3.0, 1.0), 1)


@pytest.mark.parametrize("args, fragments", [
    (["--tensor-split", "a,b"], ["--tensor-split must be comma-separated numbers"]),
    (["--ray", "--replicas", "0"], ["--replicas must be at least 1"]),
    (["--replicas", "2"], ["--replicas and --gpus-per-replica need --ray"]),
    (["--gpus-per-replica", "1"], ["need --ray"]),
    (["--split-mode", "diagonal"], ["--split-mode"]),
    (["--main-gpu", "-1"], ["--main-gpu must be 0 or more"]),
])
def test_bad_split_and_replica_flags_are_one_line(runner, problems_csv, tmp_path, args, fragments):
    result = runner.invoke(cli, ["run", str(problems_csv), "-o", str(tmp_path / "s.csv"), *args])
    assert_one_line_error(result, *fragments)


def test_ray_without_ray_installed_is_one_line_naming_the_extra(runner, problems_csv, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    result = runner.invoke(cli, ["run", str(problems_csv), "-o", str(tmp_path / "s.csv"), "--ray", "--replicas", "2"])
    assert_one_line_error(result, "--ray needs Ray", "pip install 'aimo-gguf[ray]'")
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "s.journal.jsonl").exists()


def test_ray_takes_an_optional_address(monkeypatch):
    from aimo_gguf.config import RunConfig

    seen = {}

    def fake_run(problems, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr("aimo_gguf.pipeline.runner.run", fake_run)
    from click.testing import CliRunner

    CliRunner().invoke(cli, ["run", "p.csv", "--ray", "--replicas", "2"])
    assert seen["ray"] == "local" and seen["replicas"] == 2
    seen.clear()
    CliRunner().invoke(cli, ["run", "p.csv", "--ray", "ray://head:10001"])
    assert seen["ray"] == "ray://head:10001"
    seen.clear()
    CliRunner().invoke(cli, ["run", "p.csv"])  # only the options given are passed: the default is RunConfig's
    assert seen.get("ray") is None and RunConfig().ray is None


def test_models_has_the_multi_gpu_columns(runner):
    result = runner.invoke(cli, ["models", "--ctx", "12288", "-b", "16"], catch_exceptions=False)
    assert result.exit_code == 0
    header = result.output.splitlines()[1]
    assert "2 x T4 (15 GB each)" in header and "4 x L4 (22 GB each)" in header
    data = json.loads(runner.invoke(cli, ["models", "--json", "--gpu", "16GB,2x15GB"]).output)
    fits = {e["name"] + e["quant"]: e["fits"] for e in data}
    big = fits["DeepSeek-R1-Distill-Qwen-14BQ4_K_M"]
    one, two = big["16GB"]["n_gpu_layers"], big["2x15GB"]["n_gpu_layers"]
    assert two == -1 or two > one  # two T4s hold more of a 14B model than one


def test_info_gives_each_gpu_its_share(runner, monkeypatch):
    import aimo_gguf.fit.gpus as devices

    monkeypatch.setattr(devices, "gpu_memories", lambda: [])  # whatever this machine has: NVML sees nothing
    result = runner.invoke(cli, ["info", "--gpus", "2x15GB", "-ngl", "-1", "--tensor-split", "3,1", "--json"],
                           catch_exceptions=False)
    per = json.loads(result.output)["per_gpu"]
    assert [p["gpu"] for p in per] == [0, 1] and per[0]["bytes"] > per[1]["bytes"] > 0
    assert sum(p["layers"] for p in per) == json.loads(result.output)["estimate"]["n_gpu_layers"]
    table = runner.invoke(cli, ["info", "--gpus", "15GB,15GB", "-ngl", "-1"]).output
    assert "per GPU" in table and "GPU1" in table
    assert "per GPU" not in runner.invoke(cli, ["info"]).output  # one GPU (or none): no split to show


def test_ngl_auto_over_several_gpus_fits_every_gpu_s_share(monkeypatch):
    import aimo_gguf.engine.llama as llama_module
    import aimo_gguf.fit.gpus as devices
    import aimo_gguf.fit.shares as split
    from aimo_gguf.config import RunConfig
    from aimo_gguf.fit.memory import read_shape
    from aimo_gguf.fit.plan import plan_load
    from aimo_gguf.gguf.files import default_model_path

    path = default_model_path()
    monkeypatch.setattr(llama_module, "supports_gpu_offload", lambda: True)
    total = split.device_shares(read_shape(str(path)), ctx=512 + 64, batch_size=4, n_gpu_layers=-1,
                                sizes=[10**10]).per_device[0]
    roomy = total // 2 + 600 * 2**20  # half the model and the reserve: neither GPU alone, both together
    monkeypatch.setattr(devices, "gpu_memories", lambda: [(roomy, 0, roomy)] * 2)
    config = RunConfig(n_gpu_layers="auto", max_tokens=64, batch_size=4)
    plan = plan_load(config, path)
    assert plan.n_gpu_layers == -1
    assert "fit 2 GPUs (--split-mode layer)" in " ".join(plan.notes)
    assert plan.shares is not None and plan.shares.fits([roomy] * 2)  # the shares of the plan, per GPU
    monkeypatch.setattr(devices, "gpu_memories", lambda: [(roomy // 4, 0, roomy // 4)] * 2)
    assert 0 <= plan_load(config, path).n_gpu_layers < read_shape(str(path)).n_layers


def test_a_replica_s_time_shares_are_the_run_s():
    """On one replica of several, a problem's share counts every replica's parallel problems and the
    problems waiting for the others, not just the few this replica was handed."""
    from fakes import Clock, TimedEngine, boxed, problems_of

    from aimo_gguf.config import RunConfig
    from aimo_gguf.solving.solver import Solver

    def budgets(**replica):
        clock = Clock()
        engine = TimedEngine(lambda p, s: boxed(1), clock, step=1.0, batch_size=1)
        solver = Solver(engine, RunConfig(samples=1), deadline=clock() + 120, clock=clock, **replica)
        return [r.budget for r in solver.solve(problems_of(2))]

    alone = budgets()
    assert alone[0] == pytest.approx(120 * 1 / 2)  # this engine's two problems share all the time
    shared = budgets(parallel=4, waiting_elsewhere=38)
    assert shared[0] == pytest.approx(120 * 4 / 40)  # four run at once over the run's forty problems


def test_info_with_gpus_resolves_auto_layers_over_those_gpus(runner, monkeypatch):
    import aimo_gguf.fit.gpus as devices

    monkeypatch.setattr(devices, "gpu_memories", lambda: [])
    monkeypatch.setattr(llama, "supports_gpu_offload", lambda: True)
    result = runner.invoke(cli, ["info", "--gpus", "2x15GB", "-ngl", "auto", "--json"], catch_exceptions=False)
    out = json.loads(result.stdout)
    assert out["estimate"]["n_gpu_layers"] > 0 and len(out["per_gpu"]) == 2  # not "needs NVML or --max-memory"
    assert "--n-gpu-layers auto: all of" in result.stderr and "fit 2 GPUs" in result.stderr  # said, as run says it


@pytest.mark.parametrize(("options", "message"), [
    (dict(main_gpu=2), "--main-gpu 2: only 2 GPU(s) are visible"),
    (dict(tensor_split="1,1,1"), "--tensor-split has 3 shares, and 2 GPU(s) are visible"),
])
def test_device_options_are_checked_against_the_gpus_there_are(monkeypatch, options, message):
    import aimo_gguf.fit.gpus as devices
    from aimo_gguf.config import RunConfig
    from aimo_gguf.errors import InputError
    from aimo_gguf.fit.plan import plan_load
    from aimo_gguf.gguf.files import default_model_path

    monkeypatch.setattr(devices, "gpu_memories", lambda: [(16 << 30, 0, 16 << 30)] * 2)
    monkeypatch.setattr(llama, "supports_gpu_offload", lambda: True)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_load(RunConfig(**options), default_model_path())
    plan_load(RunConfig(main_gpu=1, tensor_split="3,1"), default_model_path())  # within what there is: fine


def test_one_gpu_free_is_the_main_gpu_s_with_split_mode_none(monkeypatch):
    import aimo_gguf.fit.gpus as devices
    from aimo_gguf.config import RunConfig
    from aimo_gguf.fit.plan import _devices

    monkeypatch.setattr(llama, "supports_gpu_offload", lambda: True)
    monkeypatch.setattr(devices, "gpu_memories", lambda: [(16, 15, 1), (16, 6, 10)])
    monkeypatch.setattr(devices, "gpu_memory", lambda: (16, 15, 1))
    assert _devices().one(RunConfig(split_mode="none", main_gpu=1))[0] == 10
    assert _devices().one(RunConfig())[0] == 1


def test_batch_auto_over_several_gpus_fits_every_share(monkeypatch):
    import aimo_gguf.fit.gpus as devices
    import aimo_gguf.fit.shares as split
    from aimo_gguf.config import RunConfig
    from aimo_gguf.fit.memory import read_shape
    from aimo_gguf.fit.plan import plan_load
    from aimo_gguf.gguf.files import default_model_path

    monkeypatch.setattr(llama, "supports_gpu_offload", lambda: True)
    monkeypatch.setattr(devices, "gpu_memories", lambda: [(1 << 30, 0, 1 << 30)] * 2)
    path = default_model_path()
    plan = plan_load(RunConfig(batch_size="auto", ctx=2048, n_gpu_layers=-1), path)
    batch = plan.batch_size
    shares = split.device_shares(read_shape(str(path)), ctx=2048, batch_size=batch, n_gpu_layers=-1,
                                 sizes=[1 << 30] * 2)
    bigger = split.device_shares(read_shape(str(path)), ctx=2048, batch_size=batch + 1, n_gpu_layers=-1,
                                 sizes=[1 << 30] * 2)
    from aimo_gguf.fit.plan import GPU_RUNTIME_RESERVE

    assert batch >= 1 and shares.fits([1 << 30] * 2, GPU_RUNTIME_RESERVE)
    assert not bigger.fits([1 << 30] * 2, GPU_RUNTIME_RESERVE) and "fit 2 GPUs" in " ".join(plan.notes)


@pytest.mark.parametrize("visible", [0, 1, 2, 3])
@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_the_plan_checks_the_shares_against_the_gpus_and_llama_cpp_s_array(monkeypatch, visible, extra):
    """One check before any load: more shares than llama.cpp's device array, or than the visible GPUs
    (none known without NVML), is one line; a share per device is fine."""
    import aimo_gguf.fit.gpus as devices
    from aimo_gguf.config import RunConfig
    from aimo_gguf.errors import InputError
    from aimo_gguf.fit.plan import plan_load
    from aimo_gguf.gguf.files import default_model_path

    monkeypatch.setattr(devices, "gpu_memories", lambda: [(16 << 30, 0, 16 << 30)] * visible)
    monkeypatch.setattr(devices, "gpu_memory", lambda: None)
    monkeypatch.setattr(llama, "supports_gpu_offload", lambda: True)
    n = (visible or llama.max_devices()) + extra
    config = RunConfig(tensor_split=",".join(["1"] * n))
    if extra <= 0:
        assert plan_load(config, default_model_path()).n_gpu_layers == 0
        return
    message = f"and {visible} GPU\\(s\\) are visible" if visible else "drives at most"
    with pytest.raises(InputError, match=message):
        plan_load(config, default_model_path())


@pytest.mark.parametrize(("style", "error"), [("think", "InputError"), ("harmony", "RuntimeError")])
def test_a_replica_whose_family_fails_frees_its_engine(monkeypatch, style, error):
    """The load succeeded and the prompt family failed on the model: the engine is closed at once (a one-line
    LoadFailed for aimo-gguf's own errors, the exception itself for anything else)."""
    from fakes import FakeEngine

    import aimo_gguf.fit.plan as plan_module
    import aimo_gguf.replicas.actor as actor
    from aimo_gguf.config import RunConfig
    from aimo_gguf.replicas.handle import LoadFailed

    engine = FakeEngine(str, chat_template=None)  # think needs a template: an InputError
    monkeypatch.setattr(plan_module, "load_engine", lambda *a, **k: engine)
    if error == "RuntimeError":
        monkeypatch.setattr(actor, "style_for", lambda *a: (_ for _ in ()).throw(RuntimeError("a bug")))
    replica = actor.Replica(RunConfig(prompt_style=style), "m.gguf", number=3, graded=False, traces=False,
                            verbose=False)
    if error == "InputError":
        failed = replica.load()
        assert isinstance(failed, LoadFailed) and "replica 3" in str(failed.error)
    else:
        with pytest.raises(RuntimeError, match="a bug"):
            replica.load()
    assert engine.closed and replica.engine is None
