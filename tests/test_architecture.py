"""The package arrows of docs/ARCHITECTURE.md hold in the code, and the checker sees a broken one."""
from __future__ import annotations

import os
import shutil

import pytest

import import_rules as R

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_tree_follows_the_rules():
    assert R.check(ROOT) == []


def test_every_package_is_scanned():
    sources = {a.source.split(".")[0] for a in R.arrows(ROOT)}
    assert sources == set(R.PACKAGES)


@pytest.fixture()
def copy_of_tree(tmp_path):
    for pkg in R.PACKAGES:
        shutil.copytree(os.path.join(ROOT, pkg), tmp_path / pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "weights", "*.pyc"))
    return tmp_path


def _append(root, rel, line):
    with open(os.path.join(root, rel), "a", encoding="utf-8") as f:
        f.write("\n" + line + "\n")


@pytest.mark.parametrize("rel, line, expect", [
    ("acqe_format/reader.py", "import torch", "acqe_format.reader imports torch"),
    ("acqe_format/model/info.py", "def f():\n    import diffusers", "imports diffusers"),
    ("acqe_encoder/encode.py", "def f():\n    from recat_runtime.tokenizer import build_clip_tokenizer",
     "acqe_encoder may not import recat_runtime"),
    ("recat_runtime/loading.py", "from acqe_encoder import encode", "recat_runtime may not import acqe_encoder"),
    ("acqe_format/writer.py", "import acqe_demo", "acqe_format may not import acqe_demo"),
    ("acqe_encoder/clustering.py", "import torch", "only calibrate.py"),
    ("acqe_encoder/sources/ckpt.py", "def f():\n    import torch", "only calibrate.py"),
    ("acqe_format/layout.py", "def f():\n    from acqe_format import reader", "import cycle"),
    ("recat_runtime/sampling.py", "def f():\n    from recat_runtime.api import generate", "import cycle"),
    ("recat_runtime/compact.py", "def f():\n    import triton", "only recat_runtime/triton_kernels.py"),
    ("acqe_export/gguf.py", "import torch", "acqe_export.gguf imports torch"),
])
def test_a_broken_arrow_is_found(copy_of_tree, rel, line, expect):
    assert R.check(str(copy_of_tree)) == []
    _append(copy_of_tree, rel, line)
    found = R.check(str(copy_of_tree))
    assert any(expect in v for v in found), found
