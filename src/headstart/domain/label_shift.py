"""Label shift: the target's class proportions, estimated without its labels, and the correction.

Under label shift only the class proportions p(y) change between source and target; what each
class looks like, p(x | y), does not. A classifier trained on the source then carries the
source's proportions in its probabilities, and moving them to the target's is a re-weighting:
p_t(y | x) is proportional to p_s(y | x) * w_y with w_y = q_y / p_y (q: target proportions,
p: source proportions). Three estimators of q, each a pure function registered in
:data:`SHIFT_ESTIMATORS`:

- ``bbse``: black-box shift estimation (Lipton, Wang & Smola, ICML 2018). On held-out source data
  the confusion matrix C[i, j] = P(predict i, class j) of any fixed classifier; on the target, the
  share of each prediction mu[i]. Under label shift mu = C w, so w solves a k x k linear system.
  Needs no calibration, but fails when C is (nearly) singular: two classes the classifier cannot
  tell apart on the source.
- ``rlls``: regularised BBSE (Azizzadenesheli, Liu, Yang & Anandkumar, ICLR 2019): the same
  system solved with a penalty on the weights' distance from 1; it refuses only an exactly
  singular C (a class never predicted). The penalty is a norm, not a squared norm, so it either
  does not bind (BBSE's answer exactly) or pulls the weights all the way to 1 (no shift); at the
  scale used here it did not bind on the benchmark's confusion matrices, where RLLS gave BBSE's
  answer (see :data:`RLLS_ALPHA`).
- ``em``: the EM prior adjustment of Saerens, Latinne & Decaestecker (Neural Computation 2002):
  alternate re-weighting each target prediction by q / p and re-estimating q as their mean.
  Needs *calibrated* probabilities; they are calibrated on the source validation split first with
  a temperature and one bias per class (BCTS, Alexandari et al., ICML 2020, who found EM on BCTS
  probabilities the most accurate of these estimators).

Both come with percentile-bootstrap intervals (resampling the source validation items and the
target items) and, for the decision to correct, Saerens et al.'s likelihood-ratio test of "the
proportions did not change". When the proportions cannot be estimated (too few target items, a
class missing from the source validation split, a singular confusion matrix, two classes the
classifier does not tell apart on the source validation split) the result carries a warning that
names why and no proportions, so that callers leave their predictions alone.

All of this assumes p(x | y) is unchanged. With a large input shift as well the estimates are
biased; :func:`describe_shift` says so in words.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..registry import Registry

MIN_TARGET = 20  # fewer target items say too little about k proportions
MIN_PER_CLASS = 2  # source validation items per class: below, its confusion column is noise
MIN_BOOTSTRAP = 10  # fewer resamples give no percentile interval worth the name
# Two classes count as not told apart only on evidence that they are not: the classifier ranks
# their held-out items apart with a pairwise AUC below SEPARABLE_AUC *and* a one-sided Mann-Whitney
# test cannot show any separation (p > SEPARATION_P). Their confusion columns are then the same up
# to noise: BBSE's system is singular in their direction and EM's likelihood is flat along it, so
# any split of their combined share between them is as good as another. A pair is never refused for
# want of evidence: with 4 validation items a class the rank test cannot reach 5% even at AUC 0.88,
# and refusing there refused every 10-class estimate on UCI digits. With 4 items a side (Gaussian
# scores, 20000 draws) the bar at 0.75 refuses a pair whose true AUC is 0.95 in 2% of draws, 0.9 in
# 8%, and a pair the classifier cannot tell apart at all (true AUC 0.5) in 83%.
SEPARABLE_AUC = 0.75
SEPARATION_P = 0.05
MAX_CONDITION = 1e3  # condition number of the (column-normalised) confusion matrix beyond which BBSE is not solved
FLOOR = 1e-6  # smallest proportion kept, so that log weights stay finite


@dataclass
class PriorEstimate:
    """The target's class proportions as one estimator sees them.

    ``target`` is None when they could not be estimated; ``warning`` then says why, and
    :meth:`weights` is None, so nothing gets corrected.
    """

    method: str
    source: np.ndarray
    target: np.ndarray | None
    n_target: int
    n_source: int
    interval: np.ndarray | None = None  # (k, 2): low, high
    level: float = 0.95
    warning: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.target is not None

    def weights(self) -> np.ndarray | None:
        """w_y = q_y / p_y, the re-weighting of each class's probability (None when not estimated)."""
        if self.target is None:
            return None
        return np.maximum(self.target, FLOOR) / np.maximum(self.source, FLOOR)

    def log_offsets(self) -> np.ndarray | None:
        """log w: added to the logits it is the same correction (softmax renormalises)."""
        w = self.weights()
        return None if w is None else np.log(w)

    def calibrated_offsets(self) -> tuple[float, np.ndarray] | None:
        """(temperature T, offsets o): the corrected logits are z / T + o (None when not estimated).

        Calibrate first, then move the prior: for EM, o is its BCTS calibration's per-class bias
        plus log(q / the source prior the calibrated model implies), the very posterior EM
        converged to; for the other estimators T = 1 and o = log(q / p). A head trained with
        label smoothing is less sure than it should be, so moving its raw probabilities by q / p
        flips more predictions than the shift warrants."""
        if self.target is None:
            return None
        if "bias" in self.details and "implied_source" in self.details:
            implied = np.maximum(np.asarray(self.details["implied_source"], dtype=np.float64), FLOOR)
            offsets = np.asarray(self.details["bias"], dtype=np.float64) + np.log(np.maximum(self.target, FLOOR) / implied)
            return float(self.details["temperature"]), offsets
        return 1.0, self.log_offsets()  # type: ignore[return-value]

    def correct(self, proba: np.ndarray) -> np.ndarray:
        """``proba`` moved to the estimated target proportions (see :meth:`calibrated_offsets`);
        unchanged when there is no estimate."""
        found = self.calibrated_offsets()
        p = np.asarray(proba, dtype=np.float64)
        if found is None:
            return p
        t, offsets = found
        z = np.log(np.clip(p, 1e-12, 1.0)) / t + offsets
        z -= z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    def l1(self, truth: np.ndarray) -> float:
        """Sum of absolute differences to ``truth`` (nan when not estimated)."""
        return float("nan") if self.target is None else float(np.abs(self.target - np.asarray(truth)).sum())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "source": self.source.tolist(),
                               "target": None if self.target is None else self.target.tolist(),
                               "n_target": self.n_target, "n_source": self.n_source, "level": self.level,
                               "interval": None if self.interval is None else self.interval.tolist()}
        if self.warning:
            out["warning"] = self.warning
        out.update(self.details)
        return out


# -- checks -------------------------------------------------------------------------------------

def _check_proba(proba: Any, name: str, k: int | None = None) -> np.ndarray:
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise DataError(f"`{name}` must be a 2-D array of class probabilities (items x classes, at least 2 classes), "
                        f"got shape {p.shape}.", fix="pass model.predict_proba(...) output.")
    if k is not None and p.shape[1] != k:
        raise DataError(f"`{name}` has {p.shape[1]} class columns but the source has {k}.",
                        fix="score source and target with the same model.")
    if not np.isfinite(p).all() or (p < 0).any():
        raise DataError(f"`{name}` holds negative, NaN or infinite values.", fix="pass probabilities, not logits.")
    sums = p.sum(1)
    if len(p) and np.abs(sums - 1).max() > 1e-3:
        raise DataError(f"The rows of `{name}` must sum to 1 (one row sums to {sums[np.abs(sums - 1).argmax()]:.4f}).",
                        fix="pass probabilities (a softmax), not logits or scores.")
    return p


def _check_labels(y: Any, n: int, k: int) -> np.ndarray:
    labels = np.asarray(y)
    if labels.shape != (n,):
        raise DataError(f"`y_source` must hold one label per source probability row ({n}), got shape {labels.shape}.",
                        fix="pass the integer labels of the split the probabilities were computed on.")
    if n and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= k):
        raise DataError(f"`y_source` must be integers in [0, {k}), got values from {labels.min()} to {labels.max()}.",
                        fix="encode labels as class indices in the order of the probability columns.")
    return labels.astype(np.int64)


def source_proportions(y: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(np.asarray(y, dtype=np.int64), minlength=k).astype(np.float64) / max(len(y), 1)


# -- calibration for EM (BCTS) -------------------------------------------------------------------

def fit_bcts(proba: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Temperature T and per-class biases b minimising the NLL of softmax(log p / T + b) on (proba, y).

    A small L2 pull on b (and on log T) keeps a few validation items from pushing a class's bias
    far: the estimate must stay a calibration, not a re-learning of the proportions.
    """
    from scipy.optimize import minimize

    logp = np.log(np.clip(proba, 1e-12, 1.0))
    n, k = logp.shape
    onehot = np.eye(k)[y]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        log_t, b = theta[0], theta[1:]
        t = math.exp(log_t)
        z = logp / t + b
        z = z - z.max(1, keepdims=True)
        q = np.exp(z)
        q /= q.sum(1, keepdims=True)
        logq = np.log(np.clip(q, 1e-300, 1.0))
        reg = 1e-2 / n
        loss = -(onehot * logq).sum() / n + reg * (log_t ** 2 + (b ** 2).sum())
        g = (q - onehot) / n  # d loss / d z
        grad_b = g.sum(0) + 2 * reg * b
        grad_logt = float((g * (-logp / t)).sum()) + 2 * reg * log_t
        return float(loss), np.concatenate([[grad_logt], grad_b])

    res = minimize(objective, np.zeros(k + 1), jac=True, method="L-BFGS-B",
                   bounds=[(-4.0, 4.0)] + [(-10.0, 10.0)] * k)
    return float(math.exp(res.x[0])), res.x[1:].copy()


def apply_bcts(proba: np.ndarray, temperature: float, bias: np.ndarray) -> np.ndarray:
    z = np.log(np.clip(proba, 1e-12, 1.0)) / temperature + bias
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


# -- the estimators (pure) -----------------------------------------------------------------------

def reweight(proba: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """p(y | x) * w_y, renormalised per row: the prior correction of probabilities."""
    p = _check_proba(proba, "proba")
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (p.shape[1],) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise DataError(f"`weights` must be {p.shape[1]} finite non-negative numbers, not all 0, got {w.tolist()}.",
                        fix="use PriorEstimate.weights() of an estimate whose `ok` is True.")
    out = p * w
    sums = out.sum(1, keepdims=True)
    # A row whose mass sits wholly on weight-0 classes keeps its old probabilities rather than become 0/0.
    return np.where(sums > 0, out / np.where(sums > 0, sums, 1.0), p)


def em_prior(proba_target: np.ndarray, source_prior: np.ndarray, *, max_iter: int = 500,
             tol: float = 1e-6) -> tuple[np.ndarray, int]:
    """Saerens et al.'s EM on calibrated target probabilities: the target proportions and the
    number of iterations used."""
    p = np.maximum(np.asarray(source_prior, dtype=np.float64), FLOOR)
    q = p.copy()
    it = 0
    for it in range(1, max_iter + 1):
        post = proba_target * (q / p)
        post /= np.maximum(post.sum(1, keepdims=True), 1e-300)
        new = post.mean(0)
        if np.abs(new - q).max() < tol:
            q = new
            break
        q = new
    return q / q.sum(), it


def em_log_likelihood_ratio(proba_target: np.ndarray, source_prior: np.ndarray, target_prior: np.ndarray) -> float:
    """2 x the log-likelihood ratio of the target items under the new vs the old proportions
    (Saerens et al. 2002, section 2.3): about chi-squared with k - 1 degrees of freedom when the
    proportions did not change."""
    w = np.maximum(target_prior, FLOOR) / np.maximum(source_prior, FLOOR)
    return float(2 * np.log(np.maximum((proba_target * w).sum(1), 1e-300)).sum())


def bbse_weights(proba_source: np.ndarray, y_source: np.ndarray, proba_target: np.ndarray,
                 k: int, *, names: list[str] | None = None) -> tuple[np.ndarray | None, str | None, float]:
    """(w, warning, condition number) by BBSE with hard predictions: w solves C w = mu."""
    pred_s, pred_t = proba_source.argmax(1), proba_target.argmax(1)
    c = np.zeros((k, k))
    np.add.at(c, (pred_s, y_source), 1.0)
    c /= len(y_source)
    mu = np.bincount(pred_t, minlength=k) / len(pred_t)
    # The conditioning of C with each column scaled to sum to 1 (P(predict i | class j)): the
    # proportions themselves should not make a well-separated class look ill-conditioned.
    cols = c.sum(0)
    sv = np.linalg.svd(c / np.maximum(cols, 1e-12), compute_uv=False)
    cond = float(sv[0] / sv[-1]) if sv[-1] > 0 else float("inf")
    if not np.isfinite(cond) or cond > MAX_CONDITION:
        col = c / np.maximum(cols, 1e-12)
        worst = _most_confused(col, names)
        return None, (f"the source confusion matrix is singular (condition number "
                      f"{'infinite' if not np.isfinite(cond) else f'{cond:.3g}'}, above {MAX_CONDITION:g}): "
                      f"{worst}"), cond
    w = np.linalg.solve(c, mu)
    return np.maximum(w, 0.0), None, cond


# Scale of RLLS's regulariser. The penalty alpha * rho * ||theta|| is a norm, so it acts as a switch:
# below the smallest singular value of C it does not bind and RLLS returns BBSE's solution; above,
# theta = 0 (no shift). Measured on bench/label_shift.py (val calibration, 3 seeds, 2 skews): at 0.01
# RLLS is within 0.005 (L1) of BBSE; at 0.3 it already answers "no shift" on BBC News (L1 0.31 to 1.25
# against BBSE's 0.03 to 0.05). On four 2-D classes two of which overlap (120 source items, 3 seeds,
# 3 overlaps) 0.1 moved one run of nine off BBSE's answer; 0.3 gave "no shift" in all nine.
RLLS_ALPHA = 0.01
RLLS_DELTA = 0.05  # the failure probability in RLLS's concentration bound


def rlls_weights(proba_source: np.ndarray, y_source: np.ndarray, proba_target: np.ndarray, k: int, *,
                 alpha: float = RLLS_ALPHA, names: list[str] | None = None
                 ) -> tuple[np.ndarray | None, str | None, float]:
    """(w, warning, condition number) by RLLS (Azizzadenesheli, Liu, Yang & Anandkumar, ICLR 2019):
    BBSE's linear system solved as ``min ||C theta - b|| + alpha * rho ||theta||`` with
    theta = w - 1, b = mu - C 1 and w >= 0, where rho bounds the sampling error of C from n source
    items. Shrinks the weights towards 1 (no shift) where C is ill-conditioned instead of refusing."""
    from scipy.optimize import minimize

    pred_s, pred_t = proba_source.argmax(1), proba_target.argmax(1)
    n = len(y_source)
    c = np.zeros((k, k))
    np.add.at(c, (pred_s, y_source), 1.0)
    c /= n
    mu = np.bincount(pred_t, minlength=k) / len(pred_t)
    cols = c.sum(0)
    sv = np.linalg.svd(c / np.maximum(cols, 1e-12), compute_uv=False)
    cond = float(sv[0] / sv[-1]) if sv[-1] > 0 else float("inf")
    if np.linalg.matrix_rank(c) < k:  # singular: no regulariser makes a class that is never predicted estimable
        return None, (f"the source confusion matrix is singular (rank {np.linalg.matrix_rank(c)} of {k}, condition "
                      f"number {'infinite' if not np.isfinite(cond) else f'{cond:.3g}'}): "
                      f"{_most_confused(c / np.maximum(cols, 1e-12), names)}"), cond
    b = mu - c.sum(1)
    log_term = 2 * math.log(2 * k / RLLS_DELTA)
    rho = 3 * (log_term / (3 * n) + math.sqrt(log_term / n))
    lam = alpha * rho
    eps = 1e-12

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        r = c @ theta - b
        nr, nt = math.sqrt(float(r @ r) + eps), math.sqrt(float(theta @ theta) + eps)
        return nr + lam * nt, c.T @ r / nr + lam * theta / nt

    res = minimize(objective, np.zeros(k), jac=True, method="L-BFGS-B", bounds=[(-1.0, None)] * k)
    return np.maximum(res.x + 1.0, 0.0), None, cond


def _most_confused(col: np.ndarray, names: list[str] | None = None) -> str:
    k = col.shape[0]
    name = (lambda i: str(i)) if names is None else (lambda i: names[i])
    if (col.sum(0) == 0).any():
        return f"class {name(int(np.flatnonzero(col.sum(0) == 0)[0]))} has no source validation item"
    sim = col.T @ col / np.maximum(np.outer(np.linalg.norm(col, axis=0), np.linalg.norm(col, axis=0)), 1e-12)
    np.fill_diagonal(sim, -1)
    i, j = np.unravel_index(int(sim.argmax()), (k, k))
    return f"the classifier predicts classes {name(int(i))} and {name(int(j))} alike on the source"


def inseparable_pairs(proba_source: np.ndarray, y_source: np.ndarray, k: int) -> list[dict[str, Any]]:
    """Pairs of classes the classifier does not tell apart on held-out source items.

    For classes i and j, the items of the two are ranked by log p_i - log p_j; the pairwise AUC is
    the chance that an item of i ranks above one of j (0.5: no better than a coin). A pair is
    returned only on evidence that they are not told apart: an AUC below SEPARABLE_AUC, and a
    one-sided Mann-Whitney test that cannot show it above 0.5 (p > SEPARATION_P), so that a weak
    but real separation shown by many items is kept. Too few items to show a separation are no
    reason on their own: a pair with an AUC of SEPARABLE_AUC or more is never returned.
    """
    from scipy.stats import mannwhitneyu, rankdata

    logp = np.log(np.clip(proba_source, 1e-12, 1.0))
    found = []
    for i in range(k):
        for j in range(i + 1, k):
            a, b = logp[y_source == i], logp[y_source == j]
            if not len(a) or not len(b):
                continue
            sa, sb = a[:, i] - a[:, j], b[:, i] - b[:, j]
            # The AUC from ranks (ties count half): Mann-Whitney's U over n_i n_j, without the n_i x n_j table.
            ranks = rankdata(np.concatenate([sa, sb]))[: len(sa)]
            auc = float((ranks.sum() - len(sa) * (len(sa) + 1) / 2) / (len(sa) * len(sb)))
            if auc >= SEPARABLE_AUC:
                continue
            p = float(mannwhitneyu(sa, sb, alternative="greater").pvalue)
            if p > SEPARATION_P:
                found.append({"classes": [i, j], "auc": auc, "p_value": p})
    return found


def _calibrate(method: str, ps: np.ndarray, ys: np.ndarray) -> dict[str, Any]:
    """What an estimator fits once on the source validation split (EM: the BCTS calibration)."""
    if method != "em":
        return {}
    t, b = fit_bcts(ps, ys)
    calibrated_s = apply_bcts(ps, t, b)
    # The prior the calibrated model implies on the source (Alexandari et al.: use it, not the label
    # counts, so that a calibration that is slightly off does not read as a shift).
    return {"temperature": t, "bias": b, "implied": calibrated_s.mean(0)}


def _estimate_once(method: str, ps: np.ndarray, ys: np.ndarray, pt: np.ndarray, prior: np.ndarray, k: int,
                   fitted: dict[str, Any], names: list[str] | None = None
                   ) -> tuple[np.ndarray | None, str | None, dict[str, Any]]:
    if method in ("bbse", "rlls"):
        w, warning, cond = (bbse_weights if method == "bbse" else rlls_weights)(ps, ys, pt, k, names=names)
        if w is None:
            return None, warning, {"condition_number": cond}
        q = w * source_proportions(ys, k)  # w re-weights the held-out split's own proportions
        if q.sum() <= 0:
            return None, (f"{method.upper()} gave all-zero proportions (the target predictions contradict the "
                          "confusion matrix)"), {}
        return q / q.sum(), None, {"condition_number": cond}
    calibrated_t = apply_bcts(pt, fitted["temperature"], fitted["bias"])
    q, iters = em_prior(calibrated_t, fitted["implied"])
    lr = em_log_likelihood_ratio(calibrated_t, fitted["implied"], q)
    return q, None, {"temperature": fitted["temperature"], "bias": fitted["bias"].tolist(),
                     "implied_source": fitted["implied"].tolist(), "em_iterations": iters, "likelihood_ratio": lr}


def estimate_prior(method: str, proba_source: Any, y_source: Any, proba_target: Any, *,
                   source_prior: Any = None, bootstrap: int = 100, level: float = 0.95,
                   seed: int = 0, class_names: list[str] | None = None) -> PriorEstimate:
    """The target's class proportions by ``method`` (a name in :data:`SHIFT_ESTIMATORS`).

    ``proba_source``, ``y_source``: a classifier's probabilities and the true labels on held-out
    *source* data (the validation split, never the training split: the classifier is
    over-confident there). ``proba_target``: its probabilities on the unlabelled target.
    ``source_prior``: the proportions the classifier was trained under, which the correction
    weights q / p are taken against (default: those of ``y_source``). ``bootstrap``: resamples for
    the percentile interval (0 = none, else at least MIN_BOOTSTRAP); each resample draws both the
    source items (EM refits its calibration on them) and the target items. Besides ``interval`` at
    ``level``, ``details`` holds ``simultaneous_interval`` at the Bonferroni level 1 - (1 - level) / k,
    which covers all k shares at once with probability ``level`` (what
    :func:`label_shift_significant` decides on), and ``bootstrap_l1``, the median L1 distance of the
    resampled estimates from the estimate: its sampling error at this many items. ``class_names``:
    the names the warnings use for the classes (default: their indices).

    Classes the classifier does not tell apart on the source items (:func:`inseparable_pairs`) get
    no estimate: their split of the target would be a guess.
    """
    if method not in SHIFT_ESTIMATORS:
        SHIFT_ESTIMATORS.get(method)  # raises with the closest names
    if bootstrap < 0 or 0 < bootstrap < MIN_BOOTSTRAP or not 0 < level < 1:
        raise ConfigError(f"`bootstrap` must be 0 (no interval) or at least {MIN_BOOTSTRAP}, and `level` in (0, 1); "
                          f"got {bootstrap} and {level}.", fix=f"use e.g. bootstrap=200, or 0 for no interval.")
    ps = _check_proba(proba_source, "proba_source")
    k = ps.shape[1]
    if class_names is not None and len(class_names) != k:
        raise DataError(f"`class_names` has {len(class_names)} names for {k} probability columns.",
                        fix="pass one name per class, in the order of the columns.")
    names = [str(i) for i in range(k)] if class_names is None else [str(n) for n in class_names]
    pt = _check_proba(proba_target, "proba_target", k)
    ys = _check_labels(y_source, len(ps), k)
    prior = source_proportions(ys, k) if source_prior is None else np.asarray(source_prior, dtype=np.float64)
    if prior.shape != (k,) or not np.isfinite(prior).all() or (prior < 0).any() or abs(prior.sum() - 1) > 1e-6:
        raise DataError(f"`source_prior` must be {k} proportions summing to 1, got {np.asarray(source_prior).tolist()}.",
                        fix="pass the class shares of the training split, or leave it out.")

    def unestimated(why: str, **details: Any) -> PriorEstimate:
        return PriorEstimate(method, prior, None, len(pt), len(ps), warning=f"no {method} estimate of the target's "
                             f"class proportions, so no prior correction: {why}", details=details)

    if len(pt) < max(MIN_TARGET, 2 * k):
        return unestimated(f"the target has {len(pt)} item(s); at least {max(MIN_TARGET, 2 * k)} are needed for "
                           f"{k} classes")
    counts = np.bincount(ys, minlength=k)
    if (counts < MIN_PER_CLASS).any():
        missing = [names[int(c)] for c in np.flatnonzero(counts < MIN_PER_CLASS)]
        return unestimated(f"class(es) {', '.join(missing[:10])} have fewer than {MIN_PER_CLASS} source "
                           f"validation items, so the classifier's behaviour on them is unknown")
    fitted = _calibrate(method, ps, ys)
    q, warning, details = _estimate_once(method, ps, ys, pt, prior, k, fitted, names)
    if q is None:
        return unestimated(warning or "the estimator failed", **details)
    pairs = inseparable_pairs(ps, ys, k)
    if pairs:
        words = "; ".join(f"{names[p['classes'][0]]} and {names[p['classes'][1]]} (pairwise AUC {p['auc']:.2f}, "
                          f"p = {p['p_value']:.2f})" for p in pairs[:5]) + ("; ..." if len(pairs) > 5 else "")
        return unestimated(f"the classifier does not tell these classes apart on the {len(ps)} held-out source items: "
                           f"{words}, so how the target splits between them would be a guess; use a backbone "
                           "whose features separate them, or merge them if they are one class in practice",
                           inseparable=[{"classes": [names[i] for i in p["classes"]], "auc": p["auc"],
                                         "p_value": p["p_value"]} for p in pairs])
    interval = None
    if bootstrap:
        from threadpoolctl import threadpool_limits

        rng = np.random.default_rng(seed)
        draws = []
        # One BLAS thread: L-BFGS-B's small matrix products spend 30x longer waking threads than computing
        # (EM's calibration, refitted per resample: 16 ms a fit, 0.5 ms on one thread, on 2 shared cores).
        with threadpool_limits(1, user_api="blas"):
            for _ in range(bootstrap):
                # Both sides: the calibration (EM) and the confusion matrix (BBSE, RLLS) come from a few
                # held-out source items and are as noisy as the target's predictions. On ten synthetic
                # classes with 8 validation items each and 200 target items (40 draws), resampling the
                # target alone under one calibration gave 95% intervals that held the true share in 87%
                # of class-rows; resampling both, in 96%.
                i_s = rng.integers(0, len(ps), len(ps))
                i_t = rng.integers(0, len(pt), len(pt))
                if (np.bincount(ys[i_s], minlength=k) < 1).any():
                    continue
                fitted_b = _calibrate(method, ps[i_s], ys[i_s])
                qb, _, _ = _estimate_once(method, ps[i_s], ys[i_s], pt[i_t], prior, k, fitted_b)
                if qb is not None:
                    draws.append(qb)
        details["bootstrap_draws"] = len(draws)
        if len(draws) >= max(10, bootstrap // 2):
            a = np.asarray(draws)
            interval = np.stack([np.quantile(a, (1 - level) / 2, axis=0), np.quantile(a, (1 + level) / 2, axis=0)], 1)
            joint = 1 - (1 - level) / k  # Bonferroni: all k intervals hold at once with probability >= level
            details["simultaneous_level"] = joint
            details["simultaneous_interval"] = np.stack([np.quantile(a, (1 - joint) / 2, axis=0),
                                                         np.quantile(a, (1 + joint) / 2, axis=0)], 1).tolist()
            details["bootstrap_l1"] = float(np.median(np.abs(a - q).sum(1)))
        else:
            details["interval_note"] = (f"only {len(draws)} of {bootstrap} resamples gave an estimate (the others lost "
                                        "a class or met a singular confusion matrix), so no interval")
    if method == "em":
        from scipy.stats import chi2

        details["p_value_no_shift"] = float(chi2.sf(max(details["likelihood_ratio"], 0.0), k - 1))
    return PriorEstimate(method, prior, q, len(pt), len(ps), interval, level, None, details)


def class_weights(estimate: PriorEstimate) -> np.ndarray | None:
    """Per-class weights of the importance-weighted source loss (q / p, with mean 1 under the
    source proportions), or None when the proportions were not estimated."""
    w = estimate.weights()
    if w is None:
        return None
    return w / float((w * estimate.source).sum())


def resample_indices(labels: np.ndarray, weights: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Indices that draw ``len(labels)`` items with probability proportional to each item's class
    weight: the source, resampled to the target's proportions, which makes both the source
    cross-entropy and an alignment loss importance-weighted without touching the training loop."""
    y = np.asarray(labels, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64)[y]
    if w.sum() <= 0:
        raise DataError("Every class weight of the source items is 0.", fix="check the estimated proportions.")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(len(y), size=len(y), replace=True, p=w / w.sum()))


SHIFT_ESTIMATORS: Registry[Callable[..., PriorEstimate]] = Registry("label-shift estimator", ConfigError)
SHIFT_ESTIMATORS.register("bbse", lambda ps, ys, pt, **kw: estimate_prior("bbse", ps, ys, pt, **kw))
SHIFT_ESTIMATORS.register("em", lambda ps, ys, pt, **kw: estimate_prior("em", ps, ys, pt, **kw))
SHIFT_ESTIMATORS.register("rlls", lambda ps, ys, pt, **kw: estimate_prior("rlls", ps, ys, pt, **kw))

SHIFT_TOLERANCE = 0.05  # a share that moves by less than this is not called a shift in words


def label_shift_significant(estimate: PriorEstimate) -> bool:
    """Some class's share moved by at least SHIFT_TOLERANCE with its simultaneous interval excluding
    the source share, and, where the estimator has one (EM), the likelihood-ratio test of "the
    proportions did not change" rejecting at 1 - level. Without an interval: by the point estimate
    alone.

    The simultaneous interval (Bonferroni over the k classes) keeps the chance of calling a shift
    where there is none at 1 - level: with k per-class 95% intervals, one of ten misses by chance
    far more often than 5% of the time."""
    if estimate.target is None:
        return False
    moved = np.abs(estimate.target - estimate.source) >= SHIFT_TOLERANCE
    p_value = estimate.details.get("p_value_no_shift")
    if p_value is not None and p_value > 1 - estimate.level:
        return False
    if estimate.interval is None:
        return bool(moved.any())
    interval = np.asarray(estimate.details.get("simultaneous_interval", estimate.interval))
    outside = (estimate.source < interval[:, 0]) | (estimate.source > interval[:, 1])
    return bool((moved & outside).any())


def subsample_to_shares(labels: np.ndarray, shares: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Indices of a subsample of the items, drawn WITHOUT replacement, whose class shares are
    ``shares``: the largest n such that every class c has round(shares_c * n) items to draw from.

    Unlike :func:`resample_indices`, no item appears twice: a two-sample test or a domain
    classifier recognises repeated items, so a source resampled with replacement reads as
    different from a target with the very same class proportions."""
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(shares, dtype=np.float64)
    if s.ndim != 1 or not np.isfinite(s).all() or (s < 0).any() or s.sum() <= 0:
        raise DataError(f"`shares` must be finite non-negative class shares, not all 0, got {s.tolist()}.",
                        fix="pass PriorEstimate.target of an estimate whose `ok` is True.")
    s = s / s.sum()
    counts = np.bincount(y, minlength=len(s))[: len(s)]
    wanted = s > 0
    if (counts[wanted] == 0).any():
        raise DataError("A class with a positive share has no item to draw from.",
                        fix="estimate the shares from the same labelled items.")
    n = float((counts[wanted] / s[wanted]).min())
    rng = np.random.default_rng(seed)
    take = [rng.choice(np.flatnonzero(y == c), min(int(round(s[c] * n)), int(counts[c])), replace=False)
            for c in range(len(s))]
    return np.sort(np.concatenate(take)).astype(np.int64)


def describe_shift(estimate: PriorEstimate | None, input_shift: bool | None, label_names: list[str],
                   trust: dict[str, Any] | None = None, unseen: dict[str, Any] | None = None) -> str:
    """In words: is the shift in the labels, the inputs, both or neither?

    ``input_shift``: whether the inputs still differ once the source is re-weighted to the
    estimated target proportions (None: not measured). The label shift is called by
    :func:`label_shift_significant`. ``trust``: the readings of
    :func:`~headstart.domain.validators.proportions_trusted`; when they say the estimate is not to
    be trusted, the words say so and why. ``unseen``: the target's classes the source lacks (see
    :func:`~headstart.domain.gap.unseen_classes`): no re-weighting covers them, so they lead the
    words, and the estimate, which spreads their items over the known classes, is called biased.
    """
    if unseen:
        return (f"new classes, not only a change of proportions: the target holds class(es) the source lacks "
                f"({unseen['words']}). The estimated proportions count each of their items as one of the source's "
                "classes, so they are biased, and no prior correction is advised: a model trained on the source "
                "cannot predict these classes; add labelled examples of them to the source")
    if estimate is None or estimate.target is None:
        why = estimate.warning if estimate is not None else "the source has no labels"
        base = "label shift not measured (" + why + ")"
        if input_shift is None:
            return base
        return base + ("; the inputs differ" if input_shift else "; the inputs look alike")
    labels = label_shift_significant(estimate)
    i = int(np.argmax(np.abs(estimate.target - estimate.source)))
    change = (f"'{label_names[i]}' {100 * estimate.source[i]:.0f}% of the source, about "
              f"{100 * estimate.target[i]:.0f}% of the target")
    if trust is not None and not trust.get("trusted", True):
        signs = []
        if trust.get("confidence_drop", 0.0) > trust.get("max_confidence_drop", float("inf")):
            signs.append(f"the classifier's mean confidence drops by {trust['confidence_drop']:.2f} on the target")
        if trust.get("mixture_l1", 0.0) > trust.get("max_mixture_l1", float("inf")):
            signs.append(f"the estimate differs by L1 {trust['mixture_l1']:.2f} from the class mixture that explains "
                         "the target's mean features")
        return (f"in the inputs, and the class proportions cannot be judged: the estimate (largest change {change}) "
                f"is not to be trusted, as {' and '.join(signs) or 'a trust sign failed'}. The estimators assume each "
                "class looks the same in both domains, which this shift breaks, so domain-adapt does not correct for "
                "it; align the inputs (--adapt auto)")
    if labels and input_shift:
        return (f"both: the class proportions differ (largest change {change}) and the inputs differ even after "
                "re-weighting the source to them. The proportion estimates assume each class looks the same in "
                "both domains, so with this input shift they are rough; adapt (--adapt auto considers both)")
    if labels and input_shift is None:
        return (f"in the labels: the class proportions differ (largest change {change}); whether the inputs differ "
                "as well was not measured")
    if labels:
        return (f"in the labels: the class proportions differ (largest change {change}), and once the source is "
                "re-weighted to them the inputs look alike; a prior correction should recover most of the loss")
    if input_shift:
        return ("in the inputs: the class proportions agree within their intervals, but the inputs differ; "
                "align the features (--adapt auto)")
    if input_shift is None:
        return "no label shift: the class proportions agree within their intervals"
    return "neither: the class proportions agree within their intervals and the inputs look alike"
