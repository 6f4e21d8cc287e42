"""recat_runtime.tokenizer: SD v1's CLIP BPE tokenizer, built offline from open_clip's vocabulary file."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from recat_runtime.tokenizer import build_clip_tokenizer, bytes_to_unicode, clip_tokenizer_files


@pytest.fixture(scope="module")
def files():
    return clip_tokenizer_files(compact=False)


@pytest.fixture(scope="module")
def tok(files):
    return build_clip_tokenizer(files)


def test_vocabulary_layout(files):
    vocab = json.loads(files["vocab.json"])
    assert len(vocab) == 49408
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert vocab["!"] == 0 and vocab["!</w>"] == 256
    assert sorted(vocab.values()) == list(range(49408))
    merges = files["merges.txt"].decode().split("\n")
    assert merges[0].startswith("#version") and len([m for m in merges[1:] if m]) == 49152 - 256 - 2
    assert len(set(bytes_to_unicode().values())) == 256


def test_known_sd_v1_ids(tok):
    # Token ids of SD v1.4's tokenizer (openai/clip-vit-large-patch14) for a well-known prompt.
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_padding_and_length_like_sd(tok):
    enc = tok(["a red circle"], padding="max_length", max_length=tok.model_max_length, truncation=True)
    ids = enc.input_ids[0]
    assert tok.model_max_length == 77 and len(ids) == 77
    assert ids[:5] == [49406, 320, 736, 7117, 49407] and set(ids[5:]) == {49407}


def test_round_trip_text(tok):
    text = "a small pink cross in the bottom right and a blue square in the center on a gray background"
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text


def test_rebuild_from_files_is_identical(files, tok):
    again = build_clip_tokenizer({k: bytes(v) for k, v in files.items()})
    for text in ("a photo of a cat", "Hello, World! naïve café 123"):
        assert again(text).input_ids == tok(text).input_ids


def test_missing_file_rejected(files):
    with pytest.raises(ValueError, match="merges.txt"):
        build_clip_tokenizer({"vocab.json": files["vocab.json"]})


def _modules_loaded_by(code: str) -> list[str]:
    code = f"import sys; {code}; print('torch' in sys.modules, 'open_clip' in sys.modules)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def test_module_does_not_import_torch_or_open_clip():
    # Run the module file on its own (the recat_runtime package __init__ imports torch; the tokenizer must not).
    path = Path(__file__).resolve().parents[1] / "recat_runtime" / "tokenizer.py"
    out = _modules_loaded_by("import importlib.util as u; "
                             f"spec = u.spec_from_file_location('tok', {str(path)!r}); m = u.module_from_spec(spec); "
                             "spec.loader.exec_module(m); m.build_clip_tokenizer()")
    # Some transformers releases import torch for CLIPTokenizer itself; only what this module adds is ours.
    baseline = _modules_loaded_by("from transformers import CLIPTokenizer")
    assert out == [baseline[0], "False"]


def test_compact_files_build_the_same_tokenizer(tok):
    compact = clip_tokenizer_files()
    assert set(compact) == {"merges.txt.xz", "tokenizer_config.json"}
    assert sum(len(v) for v in compact.values()) < 250_000          # vs ~1.5 MB for vocab.json + merges.txt
    again = build_clip_tokenizer(compact)
    assert again.get_vocab() == tok.get_vocab()
    for text in ("a photo of a cat", "a small pink cross in the bottom right, naïve café 123"):
        assert again(text).input_ids == tok(text).input_ids


def test_hostile_compressed_merges_rejected():
    import lzma

    bomb = lzma.compress(b"a b\n" * (2 << 20), preset=6)            # expands to 8 MiB
    with pytest.raises(ValueError, match="expands beyond"):
        build_clip_tokenizer({"merges.txt.xz": bomb})
    with pytest.raises(ValueError, match="not a valid xz"):
        build_clip_tokenizer({"merges.txt.xz": b"\xfd7zXZ\x00garbage"})


def test_shipped_merge_list_is_open_clips():
    """The merge list shipped in acqe_format/model/data is exactly CLIP's (open_clip_torch's file)."""
    import gzip

    from acqe_format.model import clip_bpe

    try:
        path = clip_bpe.find_bpe_file()
    except ImportError:
        pytest.skip("open_clip_torch is not installed")
    with gzip.open(path, "rb") as f:
        theirs = f.read().decode("utf-8").split("\n")[1:clip_bpe.NUM_MERGES + 1]
    with open(clip_bpe.MERGES_DATA, "rb") as f:
        ours = clip_bpe.merges_from_text(clip_bpe._inflate_merges(f.read()))
    assert ours == theirs
