"""Linear CKA between the cached feature at different denoising steps, with unbiased estimators.

With n samples and d features, a step's feature is ``X_t`` in R^{n x d} and its linear Gram matrix is
``K_t = X_t X_t^T`` (n x n; d can be millions). Everything below works on Grams.

- :func:`biased_hsic` — ``tr(K H L H) / (n-1)^2``; inflated when n << d (what the original ReCaT used,
  with n = 16 and d = 1.3 M).
- :func:`debiased_hsic` — Song et al. (2012) unbiased HSIC_1, with ``K~``, ``L~`` the Grams with zeroed
  diagonals: ``[tr(K~L~) + 1'K~1 1'L~1/((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))``; needs n >= 4.
- :class:`MinibatchCKA` — Nguyen, Raghu & Kornblith (2021): average HSIC_1 over minibatches, then
  normalise, ``CKA = mean_b HSIC_1(K_b, L_b) / sqrt(mean_b HSIC_1(K_b, K_b) mean_b HSIC_1(L_b, L_b))``.
  It streams: add the T Grams of one minibatch at a time, all T x T pairs at once.

Pure numpy (float64). The profiler computes Grams with torch and hands them over as numpy arrays.
"""
from __future__ import annotations

import numpy as np

__all__ = ["gram", "biased_hsic", "debiased_hsic", "pairwise_debiased_hsic", "cka", "MinibatchCKA"]


def gram(features) -> np.ndarray:
    """Linear Gram ``X X^T`` of column-centred features, float64. ``features``: ``[n, ...]``.

    Centring does not change the debiased HSIC (it is invariant to a shift common to all samples), but
    it keeps the float arithmetic away from cancellation when the features share a large mean.
    """
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    x = x - x.mean(axis=0, keepdims=True)
    return x @ x.T


def biased_hsic(k: np.ndarray, l: np.ndarray) -> float:
    """``tr(K H L H) / (n-1)^2`` with ``H = I - 11^T/n``."""
    n = k.shape[0]
    h = np.eye(n) - 1.0 / n
    return float(np.sum((h @ k @ h) * (h @ l @ h)) / (n - 1) ** 2)


def debiased_hsic(k: np.ndarray, l: np.ndarray) -> float:
    """Unbiased HSIC_1 of two ``[n, n]`` Grams (n >= 4)."""
    return float(pairwise_debiased_hsic(np.stack([k, l]))[0, 1])


def pairwise_debiased_hsic(grams: np.ndarray) -> np.ndarray:
    """HSIC_1 between all pairs of ``[T, n, n]`` Grams at once: returns ``[T, T]``.

    Raises:
        ValueError: fewer than 4 samples (the estimator divides by n(n-3)).
    """
    g = np.array(grams, dtype=np.float64, copy=True)
    if g.ndim != 3 or g.shape[1] != g.shape[2]:
        raise ValueError(f"expected [T, n, n] Gram matrices, got shape {g.shape}")
    n = g.shape[1]
    if n < 4:
        raise ValueError(f"the debiased HSIC needs at least 4 samples per minibatch, got {n}")
    idx = np.arange(n)
    g[:, idx, idx] = 0.0
    flat = g.reshape(len(g), -1)
    trace_term = flat @ flat.T                      # tr(K~ L~) (Grams are symmetric)
    totals = flat.sum(axis=1)                       # 1' K~ 1
    rows = g.sum(axis=2)                            # K~ 1
    cross = rows @ rows.T                           # 1' K~ L~ 1
    hsic = trace_term + np.outer(totals, totals) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross
    return hsic / (n * (n - 3))


def cka(k: np.ndarray, l: np.ndarray, debiased: bool = True) -> float:
    """Linear CKA of two Grams from one batch; ``debiased=False`` gives the classic (biased) value."""
    f = debiased_hsic if debiased else biased_hsic
    denom = np.sqrt(f(k, k) * f(l, l))
    return float(f(k, l) / denom) if denom > 0 else 0.0


class MinibatchCKA:
    """Streams minibatches of per-step Grams into a ``[T, T]`` minibatch-CKA matrix.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> acc = MinibatchCKA(num_steps=3)
        >>> for _ in range(4):
        ...     x = rng.normal(size=(8, 50))
        ...     acc.add([gram(x), gram(2 * x), gram(rng.normal(size=(8, 50)))])
        >>> m = acc.matrix()
        >>> round(float(m[0, 1]), 6), bool(abs(m[0, 2]) < 0.2)
        (1.0, True)
    """

    def __init__(self, num_steps: int):
        self.num_steps = int(num_steps)
        self.hsic_sum = np.zeros((self.num_steps, self.num_steps))
        self.batches = 0
        self.samples = 0

    def add(self, grams) -> None:
        """Adds one minibatch: the Grams of the same n samples at every step, ``[T, n, n]``."""
        g = np.asarray(grams, dtype=np.float64)
        if g.shape[0] != self.num_steps:
            raise ValueError(f"expected Grams for {self.num_steps} steps, got {g.shape[0]}")
        self.hsic_sum += pairwise_debiased_hsic(g)
        self.batches += 1
        self.samples += g.shape[1]

    def matrix(self) -> np.ndarray:
        """The ``[T, T]`` CKA matrix (symmetric; diagonal 1 wherever a step's feature varies)."""
        if self.batches == 0:
            raise ValueError("no minibatch was added")
        h = self.hsic_sum / self.batches
        diag = np.sqrt(np.clip(np.diag(h), 0.0, None))
        denom = np.outer(diag, diag)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(denom > 0, h / denom, 0.0)
        return out
