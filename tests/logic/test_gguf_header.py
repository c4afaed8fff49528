"""The fast GGUF header reader agrees with the gguf package's GGUFReader, and fails in one line."""

from __future__ import annotations

import pytest
from gguf import GGUFReader

from aimo_gguf.errors import ModelError
from aimo_gguf.gguf.files import default_model_path
from aimo_gguf.gguf.header import LONG_STRING_ARRAY, StringArray, read_header


def test_it_reads_what_gguf_reads():
    path = default_model_path()
    ours = read_header(path, strings=("tokenizer.ggml.merges",))
    theirs = GGUFReader(str(path))
    assert set(ours.fields) == set(theirs.fields) - {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"}
    for key, field in theirs.fields.items():
        if key.startswith("GGUF."):
            continue
        value = ours.fields[key]
        if isinstance(value, StringArray):
            assert len(value) == len(field.data) > LONG_STRING_ARRAY  # counted, not decoded
        elif isinstance(value, float):
            assert value == pytest.approx(field.contents())
        else:
            assert value == field.contents(), key
    assert ours.fields["tokenizer.ggml.merges"][:2] == theirs.fields["tokenizer.ggml.merges"].contents()[:2]
    assert [(t.name, t.shape, t.type_name, t.n_bytes) for t in ours.tensors] == [
        (t.name, tuple(int(d) for d in t.shape), t.tensor_type.name, int(t.n_bytes)) for t in theirs.tensors]


@pytest.mark.parametrize(("content", "message"), [
    (b"not a gguf", "cannot read the GGUF header"),
    (b"GGUF\x03\x00\x00\x00" + b"\xff" * 16, "claims 18446744073709551615 metadata entries"),  # garbage counts
    (b"GGUF", "is truncated: it ends at byte 4, inside its GGUF header"),
])
def test_a_broken_header_is_one_model_error(tmp_path, content, message):
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=message):
        read_header(path)


# Cut inside the header (the magic, the counts, a key, the 1 MiB vocabulary, the tensor list) or in the data.
CUTS = [5, 20, 30, 5000, 1 << 20, 1_700_000, 1_800_000, 50 << 20, -1]


@pytest.mark.parametrize("cut", CUTS)
def test_a_truncated_file_says_it_is_truncated(tmp_path, cut):
    """Before, a GGUF cut short was 'unpack_from requires a buffer of at least 1048577 bytes' (in its header)
    or llama.cpp's 'could not load' (in its data)."""
    from aimo_gguf.gguf.files import check_gguf

    data = default_model_path().read_bytes()[:cut]
    path = tmp_path / "cut.gguf"
    path.write_bytes(data)
    for check in (read_header, check_gguf):
        with pytest.raises(ModelError, match=rf"cut.gguf is truncated: .*(header|the file at byte {len(data):,})"):
            check(path)
