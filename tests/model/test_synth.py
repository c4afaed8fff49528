"""synth on the real llama.cpp: each architecture loads and decodes, info reads what was meant, the files are
marked synthetic; and the memory estimate against RSS at real vocabulary sizes (synthetic Qwen2.5 shapes)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from helpers import clean_env

from aimo_gguf.cli import cli
from aimo_gguf.engine import Engine, Request, SamplingParams
from aimo_gguf.engine import llama as llama_module
from aimo_gguf.fit.memory import measure, read_shape
from aimo_gguf.synth import spec_from_config, spec_like, synth

MiB = 2**20
TINY = {
    "qwen2": {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 256, "vocab_size": 151936,
              "tie_word_embeddings": True},
    "llama": {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 256, "vocab_size": 128256},
    "gpt-oss": {"architectures": ["GptOssForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 64,
                "num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": 8, "vocab_size": 201088,
                "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 4096}},
}


@pytest.mark.parametrize("architecture", list(TINY))
def test_each_architecture_loads_decodes_and_says_it_is_synthetic(tmp_path, architecture):
    config = tmp_path / "tiny" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps(TINY[architecture]))
    out = synth(config, tmp_path / f"{architecture}.gguf", threads=2, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, "tiny"])  # no staging file left
    spec = spec_from_config(TINY[architecture], "tiny")
    shape = read_shape(str(out))
    assert (shape.architecture, shape.n_layers, shape.n_vocab) == (architecture, 2, spec.vocab)
    assert shape.n_params == spec.n_params and shape.synthetic_like == "tiny"
    with Engine(out, ctx=64, batch_size=2, threads=2, ignore_eos=True) as engine:
        assert any("is synthetic" in note for note in engine.info.notes)
        assert engine.info.n_params == spec.n_params
        prompt = engine.tokenize("What is 2 + 2?")
        done = list(engine.generate([Request(key=i, prompt=prompt, max_tokens=4, seed=i,
                                             sampling=SamplingParams(temperature=0)) for i in range(2)]))
    assert [len(c.tokens) for c in done] == [4, 4]


@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(6, 3, 16), (6, 2, 16), (12, 4, 8), (4, 4, 32), (8, 1, 8)])
def test_every_shape_synth_accepts_loads_and_decodes(tmp_path, heads, kv_heads, head_dim):
    """What spec_from_config lets through, llama.cpp loads: the checks refuse exactly what would abort."""
    config = {**TINY["llama"], "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
              "vocab_size": 49152}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    out = synth(path, tmp_path / "m.gguf", type="F16", threads=2, progress=False)
    with Engine(out, ctx=64, batch_size=2, threads=2, ignore_eos=True) as engine:
        prompt = engine.tokenize("What is 2 + 2?")
        done = list(engine.generate([Request(key=i, prompt=prompt, max_tokens=2, seed=i,
                                             sampling=SamplingParams(temperature=0)) for i in range(2)]))
    assert [len(c.tokens) for c in done] == [2, 2]


@pytest.mark.parametrize(("like", "vocab"), [("host-qwen-152k", 151936), ("host-gpt-oss-201k", 201088)])
@pytest.mark.parametrize("logit_std", [None, 3.0, 8.0])
def test_host_work_shapes_spread_their_logits_as_asked(tmp_path, like, vocab, logit_std):
    out = synth(like, tmp_path / "h.gguf", threads=2, progress=False, logit_std=logit_std)
    assert read_shape(str(out)).n_vocab == vocab
    with Engine(out, ctx=64, batch_size=1, threads=2, max_outputs=16) as engine:
        rows = engine.logits(engine.tokenize("What is 2 + 2? Think step by step."))
    spread = float(rows.std(axis=1).mean())
    if logit_std is None:
        assert spread < 1.0  # random weights: near-uniform distributions
    else:
        assert spread == pytest.approx(logit_std, rel=0.15)


def test_the_cli_writes_atomically_and_refuses_to_overwrite(tmp_path, runner):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY["qwen2"]))
    out = tmp_path / "m.gguf"
    first = runner.invoke(cli, ["synth", "--like", str(config), "-o", str(out), "-q", "-t", "2", "--type", "Q8_0"])
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == str(out) and read_shape(str(out)).file_type == "Q8_0"
    again = runner.invoke(cli, ["synth", "--like", str(config), "-o", str(out), "-q"])
    assert again.exit_code == 2 and "already exists" in again.stderr
    dry = runner.invoke(cli, ["synth", "--like", "Qwen2.5-Math-7B-Instruct", "--dry-run"])
    assert json.loads(dry.stdout)["n_params"] == spec_like("Qwen2.5-Math-7B-Instruct").n_params


def test_a_tokenizer_only_file_stands_in_for_the_embedded_model(tmp_path, runner):
    from aimo_gguf.gguf.files import default_model_path
    from aimo_gguf.gguf.header import read_header
    from aimo_gguf.gguf.synthetic import write_tokenizer

    tok = write_tokenizer(None, tmp_path / "tokenizer.gguf")
    assert tok.stat().st_size < 4 * MiB and read_header(str(tok)).tensors == ()
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY["llama"]))
    outs = {}
    for name, extra in (("embedded", []), ("carried", ["--tokenizer", str(tok)])):
        outs[name] = tmp_path / f"{name}.gguf"
        result = runner.invoke(cli, ["synth", "--like", str(config), "-o", str(outs[name]), "-q", "-t", "2", *extra])
        assert result.exit_code == 0, result.output
    with Engine(outs["carried"], ctx=64, batch_size=1, threads=2) as a, \
            Engine(default_model_path(), ctx=64, batch_size=1, threads=2) as b:
        text = "Find all n with 3^n + 1 divisible by 10."
        assert a.tokenize(text) == b.tokenize(text) and a.n_vocab == 128256
    bad = runner.invoke(cli, ["synth", "--like", str(config), "-o", str(tmp_path / "x.gguf"), "--tokenizer",
                              str(outs["embedded"]) + ".nope"])
    assert bad.exit_code != 0 and "not found" in bad.stderr and not (tmp_path / "x.gguf").exists()


@pytest.fixture(scope="module")
def qwen05(tmp_path_factory):
    """A synthetic Qwen2.5-0.5B-Instruct, Q4_K_M: 152k vocabulary, 15 s to write."""
    return synth("Qwen2.5-0.5B-Instruct", tmp_path_factory.mktemp("synth") / "qwen05.gguf", threads=2,
                 progress=False)


def test_repacking_and_compute_are_what_llama_cpp_allocates(qwen05):
    lines = []
    llama_module._log["capture"] = lines
    try:
        with Engine(qwen05, ctx=640, batch_size=16, threads=2):
            pass
    finally:
        llama_module._log["capture"] = None
    logged = {}
    for m in re.finditer(r"(\S+)\s+(model|compute) buffer size =\s+([\d.]+) MiB", "".join(lines)):
        logged[f"{m.group(1)} {m.group(2)}"] = float(m.group(3))
    est = measure(qwen05, ctx=640, batch_size=16, threads=2)
    assert est.repack_cpu / MiB == pytest.approx(logged.get("CPU_REPACK model", 0.0), abs=0.01)
    assert est.weights_cpu / MiB == pytest.approx(logged["CPU_Mapped model"], abs=0.01)
    assert est.compute_cpu / MiB == pytest.approx(logged["CPU compute"], abs=0.01)
    assert est.source == "llama.cpp"


def bench_row(model, batch: int, tmp_path) -> dict:
    """One engine row of aimo-gguf bench in a fresh process: its RSS growth beside the estimate."""
    out = tmp_path / f"b{batch}.json"
    done = subprocess.run([sys.executable, "-m", "aimo_gguf", "bench", "-m", str(model), "-t", "2", "--no-baseline",
                           "--batch-sizes", str(batch), "--problems", str(batch), "--max-tokens", "16", "-q",
                           "--json-file", str(out)], capture_output=True, text=True, env=clean_env())
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(out.read_text())["rows"]
    return row


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 16, 64])
def test_the_estimate_holds_at_a_real_vocabulary(qwen05, batch, tmp_path):
    row = bench_row(qwen05, batch, tmp_path)
    assert row["estimate_mb"] / row["rss_growth_mb"] == pytest.approx(1.0, abs=0.10), row


@pytest.mark.slow
def test_the_estimate_holds_for_a_1_5b_shape(tmp_path_factory, tmp_path):
    model = synth("Qwen2.5-Math-1.5B-Instruct", tmp_path_factory.mktemp("synth") / "qwen15.gguf", threads=2,
                  progress=False)
    for batch in (1, 16):
        row = bench_row(model, batch, tmp_path)
        assert row["estimate_mb"] / row["rss_growth_mb"] == pytest.approx(1.0, abs=0.10), row
