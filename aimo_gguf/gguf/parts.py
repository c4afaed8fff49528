"""Split GGUF files: one model in parts ``NAME-00001-of-0000N.gguf`` (llama.cpp's ``gguf-split`` format).

Big models come this way on the Hub (gpt-oss-120b: two parts), since a file
there is limited to 50 GB. The first part holds the metadata and the split
keys (``split.no``, ``split.count``, ``split.tensors.count``); every part holds
some of the tensors. llama.cpp loads the whole model given the first part;
aimo-gguf takes the model by its first part everywhere too (``run``, ``info``,
the memory estimate, ``pull``, which fetches every part). ``split_gguf``
writes a split with the ``gguf`` package's writer, as llama.cpp's converter
does (``aimo-gguf split``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ..errors import InputError, ModelError, OutputError
from ..outputs import check_writable, replace_file, staging_folder

PART_RE = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
PART_NAME = "{stem}-{no:05d}-of-{count:05d}.gguf"  # as llama.cpp's llama_split_path writes it


def part_names(name: str) -> list[str] | None:
    """The names of every part of the split model whose part ``name`` is (any part), else None."""
    match = PART_RE.match(name)
    if match is None:
        return None
    stem, count = match["stem"], int(match["count"])
    return [PART_NAME.format(stem=stem, no=i, count=count) for i in range(1, count + 1)]


def is_first_part(name: str) -> bool:
    match = PART_RE.match(name)
    return match is not None and int(match["no"]) == 1


def model_files(path: str | Path) -> list[Path]:
    """Every file of the model at ``path``: itself, or for the first part of a split model all its parts
    (a missing one, or a later part given instead of the first, is a one-line error)."""
    path = Path(path)
    names = part_names(path.name)
    if names is None:
        return [path]
    if path.name != names[0]:
        raise ModelError(f"{path} is part {PART_RE.match(path.name)['no'].lstrip('0')} of a split model: "
                         f"give its first part, {names[0]}")
    parts = [path.with_name(n) for n in names]
    missing = [p.name for p in parts[1:] if not p.is_file()]
    if missing:
        raise ModelError(f"{path.name} is the first of {len(parts)} parts, and {', '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} not beside it in {path.parent}: "
                         "pull every part (aimo-gguf pull does)")
    return parts


def model_paths(path: str | Path) -> dict[str, Path]:
    """The model's files labelled for ``outputs.check_distinct``: no output may name any of them."""
    parts = model_files(path)
    return {"the model": parts[0], **{f"part {i} of the model": p for i, p in enumerate(parts[1:], 2)}}


def model_bytes(path: str | Path) -> int:
    """Bytes of the model's files, every part of a split model."""
    return sum(p.stat().st_size for p in model_files(path))


def _plan_writer(reader, out: Path, arch: str, *, max_tensors: int, max_size: int):
    """A GGUFWriter of ``reader``'s metadata and tensor layout, splitting into parts named after ``out``."""
    import gguf

    writer = gguf.GGUFWriter(str(out), arch, split_max_tensors=max_tensors, split_max_size=max_size)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # the writer writes these itself
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    for tensor in reader.tensors:
        writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes,
                               tensor.tensor_type)
    return writer


def split_gguf(src: str | Path, out: str | Path, *, max_tensors: int = 0, max_size: int = 0, force: bool = False,
               progress: bool = True) -> list[Path]:
    """Write the GGUF ``src`` as a split model: ``out`` names the result without the part suffix
    (``m.gguf`` -> ``m-00001-of-0000N.gguf``, ...), each part at most ``max_tensors`` tensors or
    ``max_size`` bytes of them. Returns the parts' paths, the first first."""
    import gguf

    src, out = Path(src), Path(out)
    if not (max_tensors > 0) ^ (max_size > 0):
        raise InputError("give one of --max-tensors or --max-size (a positive number)")
    if not src.is_file():
        raise InputError(f"{src}: no such file")
    if out.suffix != ".gguf":
        raise InputError(f"{out}: the output must end in .gguf (the parts are named NAME-00001-of-0000N.gguf)")
    try:
        reader = gguf.GGUFReader(str(src))
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {src} as GGUF: {e}") from None
    if reader.fields.get(gguf.Keys.Split.LLM_KV_SPLIT_COUNT) is not None:
        raise InputError(f"{src} is already a part of a split model")
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    writer = _plan_writer(reader, out, arch, max_tensors=max_tensors, max_size=max_size)
    parts = [Path(p) for p in writer.format_shard_names(out)] if len(writer.tensors) > 1 else [out]
    if len(parts) == 1:
        raise InputError(f"{src} fits one part at that size: nothing to split")
    for part in parts:
        check_writable(part, "a part")  # a folder, FIFO or device is refused before "already exists"
    existing = [p for p in parts if p.exists()]
    if existing and not force:
        raise InputError(f"{existing[0]} already exists: delete it or pass --force")
    if src.resolve() in {p.resolve() for p in parts}:
        raise InputError("a part would overwrite the input")
    if progress:
        print(f"aimo-gguf: writing {len(parts)} parts of {src.name}", file=sys.stderr)
    # Every part is written in a private folder and renamed into place only once all are whole:
    # half a split is no model, and nothing but a regular file is ever replaced.
    with staging_folder(out.parent, "the parts") as staging:
        try:
            writer.write_header_to_file(staging / out.name)
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for tensor in reader.tensors:
                writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
            writer.close()
            for part in parts:
                replace_file(staging / part.name, part, "a part")
        except OSError as e:
            writer.close()
            raise OutputError(f"cannot write {out.parent}/{parts[0].name}...: {e.strerror or e}") from None
    return parts
