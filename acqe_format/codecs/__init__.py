"""Codecs register themselves by id; the container looks them up here and knows nothing else about them.

A codec is a class with both sides of its payload (gguf-py's `quants.py` pattern): it sets
``codec_id`` (and the ``names`` the writer accepts for it) and implements

- ``check_entry(info)``: the checks that need only the directory record (run when a file is opened);
- ``decode(payload, info, threads=None, out_dtype=None)``: ``payload`` is a read-only uint8 view of
  exactly ``payload_length`` bytes whose first ``checked_length`` bytes already passed the payload CRC;
  returns the tensor in ``info.shape`` as ``info.decoded_dtype`` or, for a float tensor, as
  ``out_dtype`` (one of :data:`acqe_format.dtypes.CAST_TARGETS`): the values of decoding and then
  rounding to nearest-even (BF16 as uint16 bit patterns);
- ``check_payload(payload, info)``: the payload's checks that cost nothing proportional to the number of
  elements (its head), so a reader can tell an invalid file from one that is merely large before
  refusing it for its own decode budget (spec §10.4);
- ``decode_parts(payload, info, threads=None)`` (optional, part-wise decode): the stored parts as a
  :class:`~acqe_format.codecs.codebook.CodebookTensor`, or ``None`` when the codec has no parts;
- ``encode(value, **options) -> EncodedPayload``: the payload bytes and their ``checked_length``;
- ``payload_size(value, **options) -> int``: the exact length ``encode`` would produce. Cheap (no
  coding) for every codec except those with ``size_needs_coding = True`` (entropy coders).

Adding a codec id: docs/INTERFACES.md, "Adding a codec".
"""
from __future__ import annotations

from dataclasses import dataclass

from acqe_format.constants import CodecId
from acqe_format.errors import UnsupportedVersionError

_REGISTRY: dict[int, type] = {}


class CannotEncode(ValueError):
    """This codec cannot store this value (e.g. more contexts than rANS's slot limit allows); a writer
    choosing among codecs tries the next one. Bad options are plain ``ValueError``s."""


@dataclass(frozen=True)
class EncodedPayload:
    """What a codec's ``encode`` returns: the payload, the length of its CRC-covered head (the whole
    payload unless the codec carries its own chunk CRCs) and the dtype a reader decodes it to."""
    codec: CodecId
    payload: bytes | memoryview
    checked_length: int
    decoded_dtype: str

    @property
    def size(self) -> int:
        return len(self.payload)


class Codec:
    codec_id: CodecId
    names: tuple[str, ...] = ()
    size_needs_coding = False

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
    def decode(cls, payload, info, threads=None, out_dtype=None):  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def check_payload(cls, payload, info) -> None:
        """Head checks only; the default: nothing beyond `check_entry` (RAW)."""

    @classmethod
    def decode_parts(cls, payload, info, threads=None):
        return None

    @classmethod
    def encode(cls, value, **options) -> EncodedPayload:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def payload_size(cls, value, **options) -> int:  # pragma: no cover - overridden
        raise NotImplementedError


def get_codec(codec_id: int) -> type[Codec]:
    """The codec class for `codec_id`, or `UnsupportedVersionError` naming the unknown id."""
    _load_builtin()
    try:
        return _REGISTRY[codec_id]
    except KeyError:
        known = ", ".join(f"{i} {CodecId(i).name}" for i in sorted(_REGISTRY))
        raise UnsupportedVersionError(f"unknown codec id {codec_id} (this reader knows {known})") from None


def codec_by_name(name) -> type[Codec]:
    """The codec for a writer option: a name ("rans", "packed", "codebook_rans", ...) or an id."""
    _load_builtin()
    if not isinstance(name, str):
        return get_codec(int(name))
    key = name.lower()
    for cls in _REGISTRY.values():
        if key in cls.names:
            return cls
    known = sorted(n for cls in _REGISTRY.values() for n in cls.names)
    raise ValueError(f"unknown codec {name!r}: use one of {', '.join(known)}")


def codebook_codecs() -> list[type[Codec]]:
    """The codecs that store a `CodebookTensor`, in the writer's order of preference (lowest id first)."""
    _load_builtin()
    return [cls for _id, cls in sorted(_REGISTRY.items()) if getattr(cls, "stores_codebooks", False)]


def _load_builtin() -> None:
    if not _REGISTRY:
        from acqe_format.codecs import codebook, raw  # noqa: F401  (registration side effect)
