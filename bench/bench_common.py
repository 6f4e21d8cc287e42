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


def psnr_db(mse):
    """PSNR (dB) of uint8 images from their MSE (floored at 1e-10: identical images give 100 dB, not inf).
    Given per-image MSEs it is per image; given their mean, the pooled PSNR."""
    return 10 * np.log10(255.0**2 / np.maximum(np.asarray(mse, np.float64), 1e-10))


def psnr_stats(imgs: np.ndarray, ref: np.ndarray, per_image_mse: bool = False) -> dict:
    """PSNR of uint8 images against a reference: the mean per image, the PSNR of the pooled MSE (the worst
    images dominate it), the median, and how many images fall below 20 dB (turned to other content).
    ``per_image_mse`` adds the per-image MSEs ("mse"), from which sets can be pooled later."""
    d = (imgs.astype(np.float64) - ref.astype(np.float64)) ** 2
    mse = d.reshape(len(imgs), -1).mean(1)
    out = mse_stats(mse)
    if per_image_mse:
        out["mse"] = mse.tolist()
    return out


def mse_stats(mse) -> dict:
    """:func:`psnr_stats` from per-image MSEs (e.g. several sets' pooled together)."""
    mse = np.asarray(mse, np.float64)
    per = psnr_db(mse)
    return {"psnr": float(per.mean()), "psnr_pooled": float(psnr_db(mse.mean())),
            "psnr_median": float(np.median(per)), "below_20db": int((per < 20).sum()), "n": int(len(per))}


def paired_difference(mse_a, mse_b, resamples: int = 2000, seed: int = 0) -> dict:
    """A minus B on the same images (per-image MSEs against the same reference), with 95% bootstrap
    intervals (images resampled with replacement, the same draw for both): mean per-image PSNR and pooled
    PSNR, in dB. A difference whose interval contains 0 is not shown by these images; one image turned to
    other content moves pooled PSNR by several dB, so the pooled interval is the wide one."""
    a = np.asarray(mse_a, np.float64)
    b = np.asarray(mse_b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired per-image MSEs must be equal-length vectors, got {a.shape} and {b.shape}")
    pa, pb = psnr_db(a), psnr_db(b)
    idx = np.random.default_rng(seed).integers(0, len(a), size=(resamples, len(a)))
    mean_d = (pa[idx] - pb[idx]).mean(1)
    pooled_d = psnr_db(a[idx].mean(1)) - psnr_db(b[idx].mean(1))
    return {"mean": float((pa - pb).mean()), "mean_ci": [float(v) for v in np.percentile(mean_d, [2.5, 97.5])],
            "pooled": float(psnr_db(a.mean()) - psnr_db(b.mean())),
            "pooled_ci": [float(v) for v in np.percentile(pooled_d, [2.5, 97.5])], "n": int(len(a))}
