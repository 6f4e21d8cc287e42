"""Codecs register themselves by id; the container looks them up here and knows nothing else about them.

A codec class sets `codec_id` and implements:

- `check_entry(info)`: checks that need only the directory record (called when a file is opened);
- `decode(payload, info, threads)`: payload is a read-only uint8 view of exactly `payload_length` bytes
  whose first `checked_length` bytes already passed the payload CRC; returns the decoded array in
  `info.shape` and the numpy dtype of `info.decoded_dtype` (BF16 as uint16 bit patterns).
"""
from __future__ import annotations

from acqe_format.constants import CodecId
from acqe_format.errors import UnsupportedVersionError

_REGISTRY: dict[int, type] = {}


class Codec:
    codec_id: CodecId

    def __init_subclass__(cls, codec_id: CodecId, **kw):
        super().__init_subclass__(**kw)
        cls.codec_id = codec_id
        if int(codec_id) in _REGISTRY:
            raise RuntimeError(f"codec id {int(codec_id)} registered twice")
        _REGISTRY[int(codec_id)] = cls

    @classmethod
    def check_entry(cls, info) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def decode(cls, payload, info, threads=None):  # pragma: no cover - overridden
        raise NotImplementedError


def get_codec(codec_id: int) -> type[Codec]:
    """The codec class for `codec_id`, or `UnsupportedVersionError` naming the unknown id."""
    _load_builtin()
    try:
        return _REGISTRY[codec_id]
    except KeyError:
        known = ", ".join(f"{i} {CodecId(i).name}" for i in sorted(_REGISTRY))
        raise UnsupportedVersionError(f"unknown codec id {codec_id} (this reader knows {known})") from None


def _load_builtin() -> None:
    if not _REGISTRY:
        from acqe_format.codecs import codebook, raw  # noqa: F401  (registration side effect)
