"""Small, deterministic statistics shared by the evaluators and the diagnostics: percentile bootstrap
intervals (plain, stratified, paired) and the exact sign test (= exact McNemar test on discordant pairs).

Every resampling function takes an explicit ``seed`` and draws from its own ``numpy.random.Generator``, so the
same inputs always give the same interval. A *paired* interval is the plain interval of per-item
differences ``after - before``: the same items are resampled for both sides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DEFAULT_BOOTSTRAP = 10_000
DEFAULT_LEVEL = 0.95
_CHUNK_ELEMENTS = 4_000_000  # gathered values per block: bounds memory for large item counts


def percentile_interval(samples: np.ndarray, level: float = DEFAULT_LEVEL) -> np.ndarray:
    """samples (B, ...) -> (2, ...): the (1 - level)/2 and (1 + level)/2 percentiles along axis 0."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    alpha = (1.0 - level) / 2.0
    return np.quantile(np.asarray(samples, dtype=np.float64), [alpha, 1.0 - alpha], axis=0)


def bootstrap_means(values: np.ndarray, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement) of the rows of ``values``.

    values: (n,) or (n, k), one row per item (for a paired statistic: the per-item differences).
    Returns (n_boot,) or (n_boot, k). Resampling rows keeps the columns of an item together, so statistics
    of several columns computed from the same resample (e.g. their mean) are correctly correlated.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim not in (1, 2) or x.shape[0] == 0:
        raise ValueError(f"values must be (n,) or (n, k) with n >= 1, got shape {x.shape}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    width = 1 if x.ndim == 1 else x.shape[1]
    chunk = max(1, _CHUNK_ELEMENTS // (n * width))
    out = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))  # (b, n)
        out.append(x[idx].mean(axis=1))  # (b,) or (b, k)
    return np.concatenate(out)


def bootstrap_interval(
    values: np.ndarray, n_boot: int = DEFAULT_BOOTSTRAP, level: float = DEFAULT_LEVEL, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` (n,) over items."""
    lo, hi = percentile_interval(bootstrap_means(np.asarray(values).reshape(-1), n_boot, seed), level)
    return float(lo), float(hi)


def stratified_bootstrap_means(
    groups: Sequence[np.ndarray], n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0
) -> np.ndarray:
    """Resample items *within* each group (the group sizes stay fixed): -> (n_boot, G) group means.

    groups: G arrays (n_g,) of per-item values. Used where a score is a mean of per-group means (the
    MMVP-VLM average over patterns), so each resample keeps every group's size, as the benchmark does.
    """
    if not groups:
        raise ValueError("stratified_bootstrap_means needs at least one group")
    # one independent stream per group, derived from the seed: adding a group leaves the others unchanged
    seeds = np.random.SeedSequence(seed).spawn(len(groups))
    cols = [bootstrap_means(g, n_boot, int(s.generate_state(1)[0])) for g, s in zip(groups, seeds)]
    return np.stack(cols, axis=1)


def sign_test_p(n_plus: int, n_minus: int) -> float:
    """Two-sided exact sign test: P(a split at least as uneven as ``n_plus`` vs ``n_minus`` | p = 1/2).

    With n_plus / n_minus the discordant pairs (wrong -> right, right -> wrong) this is the exact McNemar
    test. No discordant pair gives 1.0.
    """
    if n_plus < 0 or n_minus < 0:
        raise ValueError(f"counts must be >= 0, got {n_plus}, {n_minus}")
    n = n_plus + n_minus
    if n == 0:
        return 1.0
    k = min(n_plus, n_minus)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n  # exact integers: no overflow for large n
    return min(1.0, 2.0 * tail)
