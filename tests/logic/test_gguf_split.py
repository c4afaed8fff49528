"""Split GGUF files: part names, the parts of a model, the header of a split model, writing a split."""

from __future__ import annotations

import numpy as np
import pytest

from aimo_gguf.errors import InputError, ModelError
from aimo_gguf.gguf.header import read_header
from aimo_gguf.gguf.parts import (
    is_first_part,
    model_bytes,
    model_files,
    part_names,
    split_gguf,
)


@pytest.mark.parametrize(("name", "names"), [
    ("m-00001-of-00002.gguf", ["m-00001-of-00002.gguf", "m-00002-of-00002.gguf"]),
    ("gpt-oss-120b-Q4_K_M-00002-of-00002.gguf",
     ["gpt-oss-120b-Q4_K_M-00001-of-00002.gguf", "gpt-oss-120b-Q4_K_M-00002-of-00002.gguf"]),
    ("m.gguf", None),
    ("m-1-of-2.gguf", None),  # llama.cpp's names have five digits
    ("m-00001-of-00002.bin", None),
])
def test_part_names(name, names):
    assert part_names(name) == names
    assert is_first_part(name) == (names is not None and names[0] == name)


def tiny_gguf(path, n_tensors=6):
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_string("general.name", "tiny")
    for i in range(n_tensors):
        writer.add_tensor(f"t{i}", np.full((4, 8), i, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_split_holds_every_tensor_and_its_header_reads_as_one(tmp_path):
    src = tiny_gguf(tmp_path / "tiny.gguf")
    parts = split_gguf(src, tmp_path / "out" / "tiny.gguf", max_tensors=4, progress=False)
    assert [p.name for p in parts] == ["tiny-00001-of-00002.gguf", "tiny-00002-of-00002.gguf"]
    whole, split = read_header(src), read_header(parts[0])
    assert [t.name for t in split.tensors] == [t.name for t in whole.tensors]
    assert split.fields["general.name"] == "tiny" and split.fields["split.count"] == 2
    assert model_files(parts[0]) == parts and model_bytes(parts[0]) == sum(p.stat().st_size for p in parts)
    import gguf

    data = [t.data for p in parts for t in gguf.GGUFReader(str(p)).tensors]
    assert all((d == i).all() for i, d in enumerate(data))  # the tensors' bytes, in order


def test_a_later_part_or_a_missing_part_is_one_clear_error(tmp_path):
    parts = split_gguf(tiny_gguf(tmp_path / "m.gguf"), tmp_path / "m.gguf", max_tensors=2, progress=False)
    with pytest.raises(ModelError, match="part 2 of a split model: give its first part, m-00001-of-00003.gguf"):
        model_files(parts[1])
    parts[2].unlink()
    with pytest.raises(ModelError, match="first of 3 parts, and m-00003-of-00003.gguf is not beside it"):
        read_header(parts[0])


@pytest.mark.parametrize(("options", "message"), [
    ({}, "give one of --max-tensors or --max-size"),
    ({"max_tensors": 2, "max_size": 10}, "give one of"),
    ({"max_tensors": 100}, "fits one part"),
])
def test_split_options_are_checked(tmp_path, options, message):
    src = tiny_gguf(tmp_path / "m.gguf")
    with pytest.raises(InputError, match=message):
        split_gguf(src, tmp_path / "o.gguf", progress=False, **options)


def test_split_refuses_to_overwrite_or_to_split_a_part(tmp_path):
    src = tiny_gguf(tmp_path / "m.gguf")
    parts = split_gguf(src, tmp_path / "o.gguf", max_tensors=3, progress=False)
    with pytest.raises(InputError, match="already exists"):
        split_gguf(src, tmp_path / "o.gguf", max_tensors=3, progress=False)
    assert split_gguf(src, tmp_path / "o.gguf", max_tensors=3, progress=False, force=True) == parts
    with pytest.raises(InputError, match="already a part"):
        split_gguf(parts[0], tmp_path / "again.gguf", max_tensors=1, progress=False)
    with pytest.raises(InputError, match="must end in .gguf"):
        split_gguf(src, tmp_path / "o.bin", max_tensors=3, progress=False)


def test_a_file_that_is_not_gguf_is_one_clear_error(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="cannot read .*junk.gguf as GGUF"):
        split_gguf(junk, tmp_path / "o.gguf", max_tensors=1, progress=False)
