"""Lightning / CompVis `.ckpt` (a torch zip pickle) read without torch.

`torchzip.TorchZip` reads the zip records through their compression method; `unpickle.unpickle` runs
the restricted unpickler, which builds `LazyTensor`s (dtype, shape, strides, offset of a storage record)
and nothing else a pickle could ask for beyond the allowlist. Entries load lazily: a stored record is a
view of the memory map, a deflated one is inflated when first read.

Size rules (see README.md): a kept tensor may materialise to at most EXPANSION_FACTOR times the storage
bytes its view spans (or EXPANSION_FREE_BYTES), and all kept tensors together, like all inflated records
together, to at most TOTAL_FACTOR times the file size plus TOTAL_FREE_BYTES.

Legacy (pre-1.6, non-zip) torch pickles are refused with a one-line error that says how to re-save them.
"""
from __future__ import annotations

import os

from acqe_encoder.sources import Entry, Source, acqe_configs, json_key, jsonable
from acqe_encoder.sources import limits as L
from acqe_encoder.sources.files import open_regular, shown
from acqe_encoder.sources.torchzip import DEFLATED, TorchZip
from acqe_encoder.sources.unpickle import (ALLOWED_STUB_PATHS, STUBS, LazyTensor, Refused,  # noqa: F401
                                           unpickle)
from acqe_format.errors import SourceError

DROPPED_KEYS = ("optimizer_states", "lr_schedulers", "loops")

LEGACY_HINT = ("re-save it with torch >= 1.6 and convert the new file: python -c \"import torch; "
               "torch.save(torch.load('OLD.ckpt', weights_only=True), 'NEW.ckpt')\"")


def open_ckpt(path: str, opened=None) -> Source:
    """A torch zip checkpoint as a `Source` (`opened`: the (file, RegularFile) pair `open_source` made)."""
    base = shown(os.path.basename(path))
    f, rf = opened if opened is not None else open_regular(path, base)
    try:
        lead = os.pread(f.fileno(), 4, 0)
        if not lead.startswith(b"PK"):
            if lead[:1] == b"\x80":
                raise SourceError(f"{base}: a legacy (pre-1.6, non-zip) torch pickle, which this reader does "
                                  f"not open; {LEGACY_HINT}")
            raise SourceError(f"{base}: neither a torch zip checkpoint nor a safetensors file "
                              f"(starts with {lead[:4]!r})")
        z = TorchZip(f, rf.size, base)
    except BaseException:
        f.close()
        raise
    try:
        src = _read(z, path, base, rf)
    except BaseException:
        z.close()
        raise
    src._closers.append(z.close)
    return src


def _read(z: TorchZip, path: str, base: str, rf) -> Source:
    pkl = z.read_small("data.pkl", L.MAX_PICKLE_BYTES)
    obj, storages = unpickle(pkl, base)
    records = {key: z.record(f"data/{key}", ref.nbytes) for key, ref in storages.items()}
    budget = L.TOTAL_FACTOR * rf.size + L.TOTAL_FREE_BYTES
    inflated = sum(r.size for r in records.values() if r.method == DEFLATED)
    if inflated > budget:
        raise SourceError(f"{base}: its deflated records inflate to {inflated:,} bytes from a {rf.size:,}-byte "
                          f"file; more than {L.TOTAL_FACTOR}x the file is refused (a zip bomb? torch.save "
                          f"writes records uncompressed)")

    def reader(storage):
        return z.data(records[storage.key]), z.big_endian
    for ref in storages.values():
        ref.bind(reader)

    extras: dict = {}
    dropped: list[str] = []
    configs = architecture = None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        sd = obj["state_dict"]
        for k, v in obj.items():
            if k == "state_dict":
                continue
            if k == "acqe_configs":
                architecture, configs = acqe_configs(v, f"{base}: acqe_configs")
                continue
            if k in DROPPED_KEYS:
                dropped.append(k)
                continue
            key = json_key(k)
            if isinstance(v, LazyTensor):
                extras[key] = jsonable(v) if v.numel <= 16 else f"<tensor {list(v.shape)} dropped>"
                continue
            extras[key] = jsonable(v)
    elif isinstance(obj, dict):
        sd = obj
    else:
        what = "tensor" if isinstance(obj, (LazyTensor, Refused)) else type(obj).__name__
        raise SourceError(f"{base}: the checkpoint holds a {what}, not a state dict")
    entries, scalars = tensor_entries(sd, base)
    extras.update({f"state_dict.{k}": v for k, v in scalars.items()})
    if not entries:
        raise SourceError(f"{base}: no tensors found in the checkpoint (unknown layout)")
    total = sum(t.nbytes for _, t in entries)
    if total > budget:
        raise SourceError(f"{base}: its tensors materialise to {total:,} bytes from a {rf.size:,}-byte file "
                          f"(shared or expanded storages); more than {L.TOTAL_FACTOR}x the file is refused")
    return Source(path, "ckpt", [e for e, _ in entries], extras, configs or None, architecture, None, dropped,
                  files=[rf])


def tensor_entries(sd: dict, base: str = "checkpoint", prefix: str = "") -> tuple[list, dict]:
    """([(Entry, LazyTensor)], JSON-able non-tensor values) of a flat dict that may mix tensors and values.

    The broadcast rule: a kept tensor may materialise to at most EXPANSION_FACTOR (16) times the storage
    bytes its view spans, or to EXPANSION_FREE_BYTES (64 KiB) whatever its strides. Zero and overlapping
    strides are legitimate but rare in checkpoints, and small where they occur: CLIP's `position_ids`
    (`arange(77).expand(1, -1)`, stride 0 on a size-1 dimension, ratio 1) or a broadcast bias buffer.
    Refusing every zero stride would refuse those; allowing any ratio lets 4 bytes declare 1.6 GB (a
    (20000, 20000) view with strides (0, 0)). 16x keeps a crafted tensor within a small multiple of the
    bytes behind it, and the per-checkpoint total (16x the file + 16 MiB) bounds shared storages.
    """
    entries, scalars = [], {}
    for k, v in sd.items():
        if isinstance(v, (LazyTensor, Refused)):
            if isinstance(k, bool) or not isinstance(k, (str, int)):
                raise SourceError(f"{base}: a tensor's key is a {type(k).__name__}, not a string")
            name = prefix + str(k)
            if isinstance(v, Refused):
                raise SourceError(f"{base}: tensor {shown(name)[:100]!r} {v.reason}; refusing it")
            limit = max(L.EXPANSION_FACTOR * v.span_bytes, L.EXPANSION_FREE_BYTES)
            if v.nbytes > limit:
                raise SourceError(f"{base}: tensor {shown(name)[:100]!r} of shape {list(v.shape)} (strides "
                                  f"{list(v.stride)}) would expand {v.span_bytes:,} bytes of storage into "
                                  f"{v.nbytes:,}; more than {L.EXPANSION_FACTOR}x is refused (see "
                                  f"acqe_encoder/sources/README.md)")
            entries.append((Entry(name, v.shape, v.dtype.name, _loader(v, base)), v))
        else:
            scalars[prefix + json_key(k)] = jsonable(v)
    return entries, scalars


def _loader(t: LazyTensor, base: str):
    def load():
        try:
            return t.load()
        except SourceError as e:
            if str(e).startswith(f"{base}: "):
                raise
            raise SourceError(f"{base}: {e}") from None
    return load
