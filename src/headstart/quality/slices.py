"""Metrics per slice (group) of the test data: is the reused model worse for some group?

Per group: n, accuracy (with its Wilson interval), macro-F1 and ECE. Across groups: the largest
accuracy gap (best minus worst group) with a bootstrap interval, and a warning for each group whose
accuracy falls behind the rest of the data beyond its interval. Groups are resampled separately
(a stratified bootstrap), which for accuracy means each group's resampled accuracy is a binomial
draw. For binary tasks, the demographic-parity and equalized-odds differences as fairlearn defines
them (``demographic_parity_difference`` and ``equalized_odds_difference``, worst case over groups);
they are a few lines, computed here without fairlearn's pandas machinery, and the tests check them
against fairlearn on the same inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DataError
from ..evaluation.intervals import wilson
from ..evaluation.metrics import expected_calibration_error

__all__ = ["check_groups", "demographic_parity_difference", "equalized_odds_difference", "slice_metrics"]


def check_groups(groups: Sequence[Any], ids: Sequence[str], column: str) -> list[str]:
    """Group values as strings; a missing value or a single group is a :class:`DataError` naming rows."""
    values = ["" if g is None else str(g).strip() for g in groups]
    empty = [ids[i] for i, v in enumerate(values) if not v]
    if empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise DataError(f"{len(empty)} row(s) have no value in the group column '{column}': {shown}.",
                        fix="fill in a group for every row (or write e.g. 'unknown').")
    distinct = sorted(set(values))
    if len(distinct) < 2:
        raise DataError(f"The group column '{column}' holds a single value ({distinct[0]!r} for all {len(values)} "
                        "rows): there is nothing to compare.",
                        fix="pass a column whose values split the rows into two or more groups.")
    return values


def _rates(y: np.ndarray, pred: np.ndarray, g: np.ndarray, names: list[str], pos: int) -> dict[str, dict[str, float]]:
    out = {}
    for name in names:
        m = g == name
        yt, yp = y[m] == pos, pred[m] == pos
        out[name] = {"selection_rate": float(yp.mean()),
                     "tpr": float(yp[yt].mean()) if yt.any() else float("nan"),
                     "fpr": float(yp[~yt].mean()) if (~yt).any() else float("nan")}
    return out


def _spread(values: list[float]) -> float:
    v = [x for x in values if not np.isnan(x)]
    return float(max(v) - min(v)) if v else float("nan")


def demographic_parity_difference(y: np.ndarray, pred: np.ndarray, groups: np.ndarray, positive: int = 1) -> float:
    """Largest minus smallest share of items predicted ``positive``, over groups."""
    g = np.asarray(groups)
    rates = _rates(np.asarray(y), np.asarray(pred), g, sorted(set(g.tolist())), positive)
    return _spread([r["selection_rate"] for r in rates.values()])


def equalized_odds_difference(y: np.ndarray, pred: np.ndarray, groups: np.ndarray, positive: int = 1) -> float:
    """The larger of the true-positive-rate spread and the false-positive-rate spread over groups."""
    g = np.asarray(groups)
    rates = _rates(np.asarray(y), np.asarray(pred), g, sorted(set(g.tolist())), positive)
    return max(_spread([r["tpr"] for r in rates.values()]), _spread([r["fpr"] for r in rates.values()]))


def _macro_f1(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    from sklearn.metrics import f1_score

    present = sorted(set(y.tolist()))
    return float(f1_score(y, pred, labels=present, average="macro", zero_division=0))


def slice_metrics(y: np.ndarray, proba: np.ndarray, groups: Sequence[str], label_names: list[str], *,
                  n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Scores per group, the largest accuracy gap with a 95% bootstrap interval, and warnings."""
    y = np.asarray(y, dtype=np.int64)
    g = np.asarray(list(groups), dtype=object)
    if len(g) != len(y):
        raise DataError(f"{len(g)} group values for {len(y)} items.")
    pred = proba.argmax(1)
    right = (pred == y).astype(np.float64)
    names = sorted(set(g.tolist()), key=str)
    rng = np.random.default_rng(seed)
    rows, boots = [], {}
    for name in names:
        m = g == name
        n = int(m.sum())
        acc = float(right[m].mean())
        boots[name] = rng.binomial(n, acc, size=n_boot) / n  # the bootstrap of a mean of 0/1 outcomes
        rows.append({"group": name, "n": n, "accuracy": acc, "accuracy_ci95": wilson(float(right[m].sum()), n),
                     "macro_f1": _macro_f1(y[m], pred[m], len(label_names)),
                     "ece": expected_calibration_error(proba[m], y[m])})
    sizes = {r["group"]: r["n"] for r in rows}
    total = len(y)
    correct_b = sum(boots[name] * sizes[name] for name in names)
    warnings: list[str] = []
    for r in rows:
        name = r["group"]
        rest_b = (correct_b - boots[name] * sizes[name]) / max(total - sizes[name], 1)
        diff = rest_b - boots[name]
        lo, hi = np.percentile(diff, [2.5, 97.5])
        rest = float((right.sum() - right[g == name].sum()) / max(total - sizes[name], 1))
        r["behind_rest"] = rest - r["accuracy"]
        r["behind_rest_ci95"] = [float(lo), float(hi)]
        r["falls_behind"] = bool(lo > 0)
        if lo > 0:
            warnings.append(f"Group '{name}' (n = {r['n']}) is {100 * (rest - r['accuracy']):.1f} points behind the "
                            f"rest of the data in accuracy ({100 * r['accuracy']:.1f}% vs {100 * rest:.1f}%; "
                            f"95% interval of the gap {100 * lo:.1f} to {100 * hi:.1f} points).")
    best = max(rows, key=lambda r: r["accuracy"])
    worst = min(rows, key=lambda r: r["accuracy"])
    gap_b = boots[best["group"]] - boots[worst["group"]]
    out: dict[str, Any] = {
        "groups": rows,
        "gap": {"metric": "accuracy", "best": best["group"], "worst": worst["group"],
                "value": best["accuracy"] - worst["accuracy"],
                "ci95": [float(v) for v in np.percentile(gap_b, [2.5, 97.5])]},
        "warnings": warnings, "n_boot": n_boot,
    }
    if len(label_names) == 2:
        pos = 1
        out["binary"] = {"positive": label_names[pos],
                         "demographic_parity_difference": demographic_parity_difference(y, pred, g, pos),
                         "equalized_odds_difference": equalized_odds_difference(y, pred, g, pos),
                         "rates": _rates(y, pred, g, names, pos)}
    return out
