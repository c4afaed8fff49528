"""One model over several GPUs: the split options' parsing and each GPU's share of the estimate."""

from __future__ import annotations

import pytest

from aimo_gguf.config import RunConfig
from aimo_gguf.errors import InputError
from aimo_gguf.fit.memory import ModelShape, estimate
from aimo_gguf.fit.shares import (
    device_label,
    device_shares,
    gpu_sizes,
    layer_devices,
    most_gpu_layers_split,
    parse_devices,
    parse_tensor_split,
)

GB = 10**9


def shape(n_layers: int = 8) -> ModelShape:
    """A made-up model: 100 MB per block, 50 MB of input and output embeddings each, 1 MB KV per token-layer."""
    return ModelShape(name="fake", file_type="Q4_K_M", n_params=1, file_bytes=n_layers * 100 * 10**6 + 10**8,
                      has_chat_template=True, architecture="llama", n_layers=n_layers, n_ctx_train=4096,
                      n_vocab=32000, block_bytes=(100 * 10**6,) * n_layers, output_bytes=50 * 10**6,
                      input_bytes=50 * 10**6, kv_elements=(2 * 1024,) * n_layers, swa_layers=(False,) * n_layers,
                      sliding_window=0, n_embd=1024, n_ff=4096)


@pytest.mark.parametrize("text, expected", [
    (None, None), ("", None), ("3,1", (3.0, 1.0)), ("1, 1, 2", (1.0, 1.0, 2.0)), ("0,1", (0.0, 1.0)),
    ([2, 1], (2.0, 1.0)),
])
def test_tensor_split_parses(text, expected):
    assert parse_tensor_split(text) == expected


@pytest.mark.parametrize("text", ["a,b", "3,", "-1,2", "0,0", "nan,1", "inf"])
def test_a_bad_tensor_split_is_an_input_error(text):
    with pytest.raises(InputError, match="--tensor-split"):
        parse_tensor_split(text)
    with pytest.raises(InputError, match="--tensor-split"):
        RunConfig(tensor_split=text)


@pytest.mark.parametrize("options, message", [
    (dict(split_mode="columns"), "--split-mode"), (dict(main_gpu=-1), "--main-gpu"),
    (dict(ray="local", replicas=0), "--replicas must be at least 1"), (dict(replicas=2), "need --ray"),
    (dict(gpus_per_replica=1), "need --ray"), (dict(ray="local", gpus_per_replica=-1), "--gpus-per-replica"),
])
def test_bad_split_and_replica_options_are_input_errors(options, message):
    with pytest.raises(InputError, match=message):
        RunConfig(**options)


@pytest.mark.parametrize("text, expected", [
    ("16GB", (1, 16 * GB)), ("2x15GB", (2, 15 * GB)), ("4 x 22GB", (4, 22 * GB)), ("2*15GiB", (2, 15 * 2**30)),
])
def test_device_sets_parse(text, expected):
    assert parse_devices(text) == expected


def test_gpu_sizes_from_text_and_labels():
    assert gpu_sizes("15GB,15GB") == gpu_sizes("2x15GB") == [15 * GB, 15 * GB]
    assert device_label("2x15GB") == "2 x T4 (15 GB each)"
    assert device_label("4x22GB") == "4 x L4 (22 GB each)"
    assert device_label("16GB") == "16GB GPU" and device_label("3x8GB") == "3 x 8GB GPUs"


@pytest.mark.parametrize("n_layers, n_gpu, fractions, expected", [
    (4, -1, [1, 1], [0, 0, 0, 1, 1]),  # 5 offloaded (4 blocks + output) over two equal GPUs
    (4, 4, [1, 1], [0, 0, 1, 1, None]),  # the output stays on the CPU
    (4, 2, [1, 1], [None, None, 0, 1, None]),
    (4, -1, [3, 1], [0, 0, 0, 0, 1]),
    (4, -1, [0, 1], [1, 1, 1, 1, 1]),
    (4, 0, [1, 1], [None] * 5),
])
def test_layers_go_to_devices_by_llama_cpp_rule(n_layers, n_gpu, fractions, expected):
    assert layer_devices(n_layers, n_gpu, fractions) == expected


def test_each_gpu_holds_its_layers_and_the_shares_add_up():
    s = shape()
    total = estimate(s, ctx=1024, batch_size=4, n_gpu_layers=-1).gpu
    one = device_shares(s, ctx=1024, batch_size=4, n_gpu_layers=-1, sizes=[16 * GB])
    assert one.per_device == (total,)
    two = device_shares(s, ctx=1024, batch_size=4, n_gpu_layers=-1, sizes=[15 * GB, 15 * GB])
    compute = estimate(s, ctx=1024, batch_size=4, n_gpu_layers=-1).compute_gpu
    assert sum(two.per_device) == total + compute  # every GPU with a layer runs its own compute buffer
    assert two.layers == (5, 4) and two.per_device[0] > two.per_device[1] > 0
    skewed = device_shares(s, ctx=1024, batch_size=4, n_gpu_layers=-1, sizes=[15 * GB, 15 * GB], tensor_split=[3, 1])
    assert skewed.layers == (7, 2) and skewed.per_device[0] > 2 * skewed.per_device[1]
    none = device_shares(s, ctx=1024, batch_size=4, n_gpu_layers=-1, sizes=[15 * GB, 15 * GB], split_mode="none",
                         main_gpu=1)
    assert none.per_device == (0, total) and none.layers == (0, 9)
    row = device_shares(s, ctx=1024, batch_size=4, n_gpu_layers=-1, sizes=[15 * GB, 15 * GB], split_mode="row")
    assert row.per_device[0] > row.per_device[1] > 0  # the KV cache on the main GPU, the weights split


def test_the_default_split_follows_the_gpus_sizes():
    s = shape()
    shares = device_shares(s, ctx=1024, batch_size=1, n_gpu_layers=-1, sizes=[24 * GB, 8 * GB])
    assert shares.layers[0] > shares.layers[1]


def test_more_gpus_fit_more_layers():
    s = shape(32)
    budget = 1_500_000_000
    one, _ = most_gpu_layers_split(s, ctx=4096, batch_size=4, sizes=[budget])
    two, shares = most_gpu_layers_split(s, ctx=4096, batch_size=4, sizes=[budget, budget])
    four, _ = most_gpu_layers_split(s, ctx=4096, batch_size=4, sizes=[budget] * 4)
    assert 0 < one < two and (four == -1 or four > two)
    assert shares.fits([budget, budget])


@pytest.mark.parametrize("options, message", [
    (dict(sizes=[]), "no GPU"), (dict(sizes=[GB], main_gpu=1), "--main-gpu 1"),
    (dict(sizes=[GB, GB], tensor_split=[1, 1, 1]), "3 shares for 2 GPUs"),
    (dict(sizes=[GB], split_mode="diagonal"), "--split-mode"),
])
def test_impossible_splits_are_input_errors(options, message):
    with pytest.raises(InputError, match=message):
        device_shares(shape(), ctx=512, batch_size=1, n_gpu_layers=-1, **options)
