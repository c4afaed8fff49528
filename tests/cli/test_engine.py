"""Tier 3: the batched engine on the real SmolLM2-135M GGUF (CPU)."""

from __future__ import annotations

import pytest

from aimo_gguf.engine import Engine
from aimo_gguf.errors import ModelError


def test_not_a_gguf_file_is_a_model_error(tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="Not a GGUF file"):
        Engine(bogus)


@pytest.mark.parametrize("n_layers", [None, 30])
@pytest.mark.parametrize(("requested", "fits", "loaded"), [
    (40, 40, 40), (40, 5, 5), (40, 6, 5), (-1, 99, -1), (-1, 3, 3), (-1, 16, 15), (8, 0, 0), (1, 0, 0),
])
def test_the_fallback_ladder_loads_the_most_layers_that_fit(monkeypatch, requested, fits, loaded, n_layers):
    """Engine.load_model on a GPU build where only ``fits`` layers load (-1 fits when 99 do): it halves down
    to the first count that loads, says so once, and reads the header only on its way down from -1, and
    only when the options do not carry the block count (a plan's)."""
    import aimo_gguf.engine.engine as engine_module
    import aimo_gguf.gguf.header as header
    from aimo_gguf.engine import EngineOptions
    from aimo_gguf.gguf.files import default_model_path

    tried, reads = [], []
    real_read = header.read_header
    monkeypatch.setattr(header, "read_header", lambda path, **k: reads.append(path) or real_read(path, **k))
    monkeypatch.setattr(engine_module, "_extra_buffers_safe", lambda notes: True)

    def open_(self, options, *, n_gpu_layers, split):
        tried.append(n_gpu_layers)
        if (99 if n_gpu_layers < 0 else n_gpu_layers) > fits:
            raise ModelError(f"{n_gpu_layers} layers do not fit")

    monkeypatch.setattr(Engine, "_open", open_)
    engine = Engine.__new__(Engine)  # the ladder alone: no model is loaded
    engine._model = engine._context = engine._batch = engine._sampling = None
    notes: list[str] = []
    options = EngineOptions(model_path=str(default_model_path()), n_gpu_layers=requested, n_layers=n_layers)
    assert engine.load_model(options, supported=True, notes=notes) == loaded
    assert tried == engine_module.layer_ladder(requested, 30)[:len(tried)] and tried[-1] == loaded
    failed = [note for note in notes if "GPU layers failed" in note]
    assert failed == ([] if loaded == requested else
                      [f"loading with {requested} GPU layers failed ({requested} layers do not fit): loaded with {loaded}"])
    assert len(reads) == (1 if n_layers is None and requested < 0 and loaded != requested else 0)


def test_the_ladder_raises_the_cpu_s_own_reason(monkeypatch):
    import aimo_gguf.engine.engine as engine_module
    from aimo_gguf.engine import EngineOptions
    from aimo_gguf.gguf.files import default_model_path

    monkeypatch.setattr(engine_module, "_extra_buffers_safe", lambda notes: True)

    def open_(self, options, *, n_gpu_layers, split):
        raise ModelError("no GPU memory" if n_gpu_layers else "the CPU's own reason")

    monkeypatch.setattr(Engine, "_open", open_)
    engine = Engine.__new__(Engine)
    engine._model = engine._context = engine._batch = engine._sampling = None
    for requested in (0, 4, -1):
        with pytest.raises(ModelError, match="the CPU's own reason"):
            engine.load_model(EngineOptions(model_path=str(default_model_path()), n_gpu_layers=requested),
                              supported=True, notes=[])


@pytest.mark.parametrize("layers", [0, -1, 7])
def test_the_plan_hands_the_engine_the_header_it_read(monkeypatch, layers):
    """load_engine's options carry the plan's block count and trained context: the engine reads no header."""
    import aimo_gguf.engine.engine as engine_module
    from aimo_gguf.config import RunConfig
    from aimo_gguf.fit.memory import read_shape
    from aimo_gguf.fit.plan import load_engine
    from aimo_gguf.gguf.files import default_model_path

    class Built(Exception):
        pass

    def build(options):
        raise Built(options)

    monkeypatch.setattr(engine_module, "Engine", build)
    with pytest.raises(Built) as built:
        load_engine(RunConfig(n_gpu_layers=layers), default_model_path())
    options, shape = built.value.args[0], read_shape(str(default_model_path()))
    assert (options.n_gpu_layers, options.n_layers, options.n_ctx_train) == (layers, shape.n_layers, shape.n_ctx_train)
