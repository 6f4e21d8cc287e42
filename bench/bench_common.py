"""What the benchmark scripts share: where run outputs go, and how images are compared."""
from __future__ import annotations

import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "_out")


def save_json(name: str, obj) -> str:
    """Writes ``obj`` to ``bench/_out/<name>`` (git-ignored: a run's raw output); returns the path."""
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
    return path


def psnr_stats(imgs: np.ndarray, ref: np.ndarray, per_image_mse: bool = False) -> dict:
    """PSNR of uint8 images against a reference: the mean per image, the PSNR of the pooled MSE (the worst
    images dominate it), the median, and how many images fall below 20 dB (turned to other content).
    ``per_image_mse`` adds the per-image MSEs ("mse"), from which sets can be pooled later."""
    d = (imgs.astype(np.float64) - ref.astype(np.float64)) ** 2
    mse = d.reshape(len(imgs), -1).mean(1)
    per = 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))
    out = {"psnr": float(per.mean()), "psnr_pooled": float(10 * np.log10(255.0**2 / max(float(mse.mean()), 1e-10))),
           "psnr_median": float(np.median(per)), "below_20db": int((per < 20).sum()), "n": int(len(per))}
    if per_image_mse:
        out["mse"] = mse.tolist()
    return out
