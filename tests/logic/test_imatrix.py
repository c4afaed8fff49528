"""Importance matrices: both llama-imatrix formats read and normalised as llama-quantize does,
and passed through llama_model_quantize."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import write_legacy_imatrix

from aimo_gguf.cli import cli
from aimo_gguf.errors import InputError
from aimo_gguf.gguf.files import default_model_path
from aimo_gguf.gguf.imatrix import load_imatrix

SRC = str(default_model_path())


def _write_gguf_imatrix(path, sums: dict, counts: dict, *, datasets=("calib.txt",), chunks=7):
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), arch="imatrix")
    w.add_array("imatrix.datasets", list(datasets))
    w.add_uint32("imatrix.chunk_count", chunks)
    w.add_uint32("imatrix.chunk_size", 512)
    for name in sums:
        w.add_tensor(f"{name}.in_sum2", np.asarray(sums[name], dtype=np.float32))
        w.add_tensor(f"{name}.counts", np.asarray(counts[name], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_imatrix_is_divided_by_counts_per_expert(tmp_path):
    path = tmp_path / "m.gguf"
    _write_gguf_imatrix(path, {"blk.0.ffn_up.weight": [2, 4, 6, 9, 9, 9], "blk.0.attn_q.weight": [3, 6]},
                        {"blk.0.ffn_up.weight": [2, 0], "blk.0.attn_q.weight": [3]})
    m = load_imatrix(path)
    assert m.format == "gguf" and len(m) == 2 and m.datasets == ["calib.txt"] and m.chunks == 7
    np.testing.assert_allclose(m.entries["blk.0.ffn_up.weight"], [1, 2, 3, 1, 1, 1])  # count 0 -> 1
    np.testing.assert_allclose(m.entries["blk.0.attn_q.weight"], [1, 2])


def test_legacy_imatrix_round_trips_and_is_divided_by_ncall(tmp_path):
    path = tmp_path / "m.dat"
    write_legacy_imatrix(path, {"blk.0.attn_k.weight": np.array([0.5, 1.5, 2.0])}, ncall=4, chunks=10, dataset="wiki")
    m = load_imatrix(path)
    assert m.format == "legacy" and m.chunks == 10 and m.datasets == ["wiki"]
    np.testing.assert_allclose(m.entries["blk.0.attn_k.weight"], [0.5, 1.5, 2.0])


@pytest.mark.parametrize("data, message", [
    (b"", "not a readable importance matrix"),
    (b"\x00\x00\x00\x00", "not a readable importance matrix"),
    (b"\x02\x00\x00\x00\x03\x00\x00\x00abc", "not a readable importance matrix"),
])
def test_broken_imatrix_files_are_one_line(tmp_path, data, message):
    path = tmp_path / "bad.dat"
    path.write_bytes(data)
    with pytest.raises(InputError, match=message):
        load_imatrix(path)


def test_missing_imatrix_file(tmp_path):
    with pytest.raises(InputError, match="no such importance matrix file"):
        load_imatrix(tmp_path / "none.dat")


def test_very_low_bit_types_need_an_imatrix(runner, tmp_path):
    result = runner.invoke(cli, ["quantize", SRC, str(tmp_path / "o.gguf"), "--type", "IQ2_XS"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: IQ2_XS needs an importance matrix: pass --imatrix FILE (from llama-imatrix)"
