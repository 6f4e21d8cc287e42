"""SD v1's CLIP BPE tokenizer, built offline.

Stable Diffusion v1 tokenizes prompts with OpenAI CLIP's byte-level BPE (vocabulary 49408, 77 positions).
The pip package ``open_clip_torch`` ships CLIP's merge list as ``bpe_simple_vocab_16e6.txt.gz``; from it we
derive the two files a ``transformers.CLIPTokenizer`` needs (``vocab.json``, ``merges.txt``) exactly the way
CLIP does. Those files are what an ``.acqe`` embeds as assets, so a runtime can rebuild the tokenizer from the
container alone.

This module imports neither torch nor open_clip (open_clip drags in torchvision); it only locates the
package's data file with ``importlib.util.find_spec``.

Example:
    >>> tok = build_clip_tokenizer()
    >>> tok("a photo of a cat").input_ids
    [49406, 320, 1125, 539, 320, 2368, 49407]
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import lzma
import os

from transformers import CLIPTokenizer

VOCAB_SIZE = 49408
MODEL_MAX_LENGTH = 77
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
# CLIP keeps the first 49152 - 256 - 2 merges of the file (its line 0 is a header).
NUM_MERGES = 49152 - 256 - 2
# a merges.txt.xz asset may not expand beyond this (the real list is about 525 kB)
MAX_MERGES_BYTES = 4 << 20

__all__ = ["build_clip_tokenizer", "clip_tokenizer_files", "bytes_to_unicode", "VOCAB_SIZE", "MODEL_MAX_LENGTH"]


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


def _find_bpe_file() -> str:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "SD v1's CLIP vocabulary comes from the pip package open_clip_torch; install it with "
            "`pip install open_clip_torch` (only its data file is read, the package is never imported)"
        )
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, BPE_FILE_NAME)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{BPE_FILE_NAME} not found in {list(spec.submodule_search_locations)}")


def _vocab_from_merges(merges: list[str]) -> dict[str, int]:
    """CLIP's vocabulary is a function of its merge list: bytes, bytes + ``</w>``, merged pairs, specials."""
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars]
    vocab += ["".join(m.split()) for m in merges]
    vocab += [BOS_TOKEN, EOS_TOKEN]
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"derived CLIP vocabulary has {len(vocab)} entries, expected {VOCAB_SIZE}")
    return {tok: i for i, tok in enumerate(vocab)}


def _merges_from_text(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    return [line for line in lines if line.strip()]


def clip_tokenizer_files(compact: bool = True) -> dict[str, bytes]:
    """SD v1's tokenizer as files to embed in an ``.acqe``.

    ``compact`` (the default) gives ``merges.txt.xz`` (CLIP's merge list, xz-compressed, about 180 kB)
    and ``tokenizer_config.json``: the vocabulary is derived from the merges exactly as CLIP derives it,
    so the 1.5 MB ``vocab.json`` + ``merges.txt`` pair carries no extra information. ``compact=False``
    gives the two plain files ``transformers.CLIPTokenizer`` reads.
    """
    with gzip.open(_find_bpe_file(), "rb") as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = lines[1 : NUM_MERGES + 1]
    encoder = _vocab_from_merges(merges)
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "do_lower_case": True,
    }
    # Same header line as OpenAI's merges.txt; readers skip line 0.
    merges_txt = ("#version: 0.2\n" + "\n".join(merges) + "\n").encode("utf-8")
    config_json = json.dumps(config, indent=2).encode("utf-8")
    if compact:
        # preset 6 (8 MiB dictionary): as small as 9 here, and decodable under a small memory limit
        return {"merges.txt.xz": lzma.compress(merges_txt, preset=6),
                "tokenizer_config.json": config_json}
    return {
        "vocab.json": json.dumps(encoder, ensure_ascii=False).encode("utf-8"),
        "merges.txt": merges_txt,
        "tokenizer_config.json": config_json,
    }


def build_clip_tokenizer(files: dict[str, bytes] | None = None) -> CLIPTokenizer:
    """Build SD v1's ``CLIPTokenizer`` from its files (default: derived from open_clip's vocabulary file).

    Args:
        files: as produced by `clip_tokenizer_files` (e.g. read back from an ``.acqe``'s assets):
            ``{"merges.txt.xz", "tokenizer_config.json"}`` (the vocabulary is derived from the merges) or
            ``{"vocab.json", "merges.txt", "tokenizer_config.json"}``; ``tokenizer_config.json`` is optional.

    Returns:
        A tokenizer giving the same ids as SD v1.4's (``openai/clip-vit-large-patch14``), padding with
        ``<|endoftext|>`` to ``model_max_length`` (77).
    """
    if files is None:
        files = clip_tokenizer_files()
    if "merges.txt.xz" in files and "merges.txt" not in files:
        # bounded decompression: a hostile asset must not expand without limit
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=32 << 20)
        try:
            raw = dec.decompress(bytes(files["merges.txt.xz"]), max_length=MAX_MERGES_BYTES + 1)
            if len(raw) > MAX_MERGES_BYTES or not dec.eof:
                raise ValueError(f"merges.txt.xz is truncated or expands beyond {MAX_MERGES_BYTES} bytes")
            text = raw.decode("utf-8")
        except (lzma.LZMAError, UnicodeDecodeError) as e:
            raise ValueError(f"merges.txt.xz is not a valid xz-compressed UTF-8 merge list: {e}") from None
        merge_lines = _merges_from_text(text)
        vocab = _vocab_from_merges(merge_lines)
    else:
        missing = [k for k in ("vocab.json", "merges.txt") if k not in files]
        if missing:
            raise ValueError(f"tokenizer files missing {missing}; got {sorted(files)}")
        vocab = json.loads(files["vocab.json"].decode("utf-8"))
        merge_lines = _merges_from_text(files["merges.txt"].decode("utf-8"))
    merges = [tuple(line.split()) for line in merge_lines]
    config = json.loads(files["tokenizer_config.json"].decode("utf-8")) if "tokenizer_config.json" in files else {}
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=config.get("unk_token", EOS_TOKEN),
        bos_token=config.get("bos_token", BOS_TOKEN),
        eos_token=config.get("eos_token", EOS_TOKEN),
        pad_token=config.get("pad_token", EOS_TOKEN),
        model_max_length=config.get("model_max_length", MODEL_MAX_LENGTH),
    )
