"""Accuracy of cost models: kernel-level cross-validation and network-level comparison.

The numbers reported everywhere in codesign:

- ``within_5pct`` / ``within_10pct`` / ``within_25pct``: share of items whose prediction is within
  ±5 % / ±10 % / ±25 % of the measurement (±10 % is nn-Meter's headline metric);
- ``rmspe``: root mean squared percentage error, sqrt(mean((p / m - 1)^2)) (nn-Meter's RMSPE, as a
  fraction: 0.1 is 10 %);
- ``kendall_tau`` and ``spearman``: rank agreement, what a search needs (it compares candidates);
- ``median_ape``: median absolute percentage error; ``rmse_log``: RMS error of log latency.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..errors import CodesignError


def accuracy(predicted, measured) -> dict[str, float]:
    """Agreement of predictions with measurements (positive arrays of equal length)."""
    p = np.asarray(predicted, dtype=np.float64)
    m = np.asarray(measured, dtype=np.float64)
    if p.shape != m.shape or p.ndim != 1:
        raise CodesignError(f"predicted and measured must be 1-D of equal length, got {p.shape} and {m.shape}")
    if len(p) == 0:
        raise CodesignError("nothing to evaluate: no items")
    if (m <= 0).any() or (p <= 0).any():
        raise CodesignError("latencies must be positive to compare them")
    from scipy.stats import kendalltau, spearmanr

    rel = np.abs(p / m - 1.0)
    out = {
        "n": int(len(p)),
        "within_5pct": float(np.mean(rel <= 0.05)),
        "within_10pct": float(np.mean(rel <= 0.10)),
        "within_25pct": float(np.mean(rel <= 0.25)),
        "rmspe": float(np.sqrt(np.mean(rel**2))),
        "median_ape": float(np.median(rel)),
        "rmse_log": float(np.sqrt(np.mean(np.log(p / m) ** 2))),
        "kendall_tau": float("nan"),
        "spearman": float("nan"),
    }
    if len(p) >= 2:
        out["kendall_tau"] = float(kendalltau(p, m)[0])
        out["spearman"] = float(spearmanr(p, m)[0])
    return out


def cross_validate(kind: str, records: Iterable, folds: int = 5, seed: int = 0, **model_kwargs) -> dict:
    """K-fold accuracy of a cost model kind on held-out kernels (their measurements unseen).

    Returns:
        dict with ``overall`` (see ``accuracy``), ``by_family`` and the fold count.
    """
    from .features import family
    from .models import create_cost_model

    rows = [r for r in records if getattr(r, "ok", True) and r.latency_ms]
    if len(rows) < 2 * folds:
        raise CodesignError(f"{len(rows)} measured kernels are too few for {folds}-fold cross-validation")
    order = np.random.default_rng(seed).permutation(len(rows))
    pred = np.empty(len(rows))
    for f in range(folds):
        test = order[f::folds]
        test_set = set(test.tolist())
        train = [rows[i] for i in range(len(rows)) if i not in test_set]
        model = create_cost_model(kind, seed=seed, **model_kwargs).fit(train)
        pred[test] = model.predict([rows[i].spec for i in test], use_measured=False)
    meas = np.array([r.latency_ms for r in rows])
    fams = np.array([family(r.spec) for r in rows])
    by_family = {f: accuracy(pred[fams == f], meas[fams == f]) for f in sorted(set(fams)) if (fams == f).sum() >= 2}
    return {"kind": kind, "folds": folds, "overall": accuracy(pred, meas), "by_family": by_family}
