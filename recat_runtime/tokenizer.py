"""SD v1's CLIP tokenizer as a ``transformers.CLIPTokenizer``, built offline from the files a `.acqe` embeds.

The files themselves (derived from open_clip's vocabulary file, or read from a file's assets) are
`acqe_format.model.clip_bpe`'s business; this module only hands them to transformers.

Example:
    >>> tok = build_clip_tokenizer()
    >>> tok("a photo of a cat").input_ids
    [49406, 320, 1125, 539, 320, 2368, 49407]
"""
from __future__ import annotations

from transformers import CLIPTokenizer

from acqe_format.errors import RuntimeLoadError

from acqe_format.model.clip_bpe import (BOS_TOKEN, EOS_TOKEN, MODEL_MAX_LENGTH, VOCAB_SIZE, bytes_to_unicode,
                                        clip_tokenizer_files, decode_tokenizer_files)

__all__ = ["build_clip_tokenizer", "check_tokenizer_fits", "clip_tokenizer_files", "bytes_to_unicode", "VOCAB_SIZE",
           "MODEL_MAX_LENGTH"]


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
    vocab, merges, config = decode_tokenizer_files(clip_tokenizer_files() if files is None else files)
    try:
        return _clip_tokenizer(vocab, merges, config)
    except Exception as e:  # noqa: BLE001 - the tokenizers backend raises a bare Exception for a bad vocabulary
        raise ValueError(f"the tokenizer files do not form a tokenizer: {str(e).splitlines()[0] if str(e) else e!r}") from None


def _clip_tokenizer(vocab, merges, config) -> CLIPTokenizer:
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=config.get("unk_token", EOS_TOKEN),
        bos_token=config.get("bos_token", BOS_TOKEN),
        eos_token=config.get("eos_token", EOS_TOKEN),
        pad_token=config.get("pad_token", EOS_TOKEN),
        model_max_length=config.get("model_max_length", MODEL_MAX_LENGTH),
    )


def check_tokenizer_fits(tokenizer, text_config) -> None:
    """RuntimeLoadError unless every id the tokenizer can produce is a row of the text encoder's embedding
    and its padded length fits the encoder's positions (else the first prompt fails inside torch)."""
    n_vocab, n_pos = text_config.vocab_size, text_config.max_position_embeddings
    if len(tokenizer) > n_vocab or max(tokenizer.get_vocab().values(), default=0) >= n_vocab:
        raise RuntimeLoadError(f"the tokenizer has {len(tokenizer)} tokens (ids up to "
                               f"{max(tokenizer.get_vocab().values(), default=0)}) but the text encoder embeds only "
                               f"{n_vocab}; the file's tokenizer assets do not belong to its text encoder")
    if tokenizer.model_max_length > n_pos:
        raise RuntimeLoadError(f"the tokenizer pads prompts to {tokenizer.model_max_length} tokens but the text "
                               f"encoder has {n_pos} positions")
