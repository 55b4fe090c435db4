"""Per-domain normalisation and curriculum self-training on frozen features.

Two label-free steps, each a pure function of features:

- **Per-domain standardisation** (feature-level AdaBN; Li et al. 2016 re-normalise the BatchNorm
  statistics per domain, here the pooled features are): the source is standardised with its own
  mean / scale, the target with *its* own, so a shift of each feature's location and scale
  between the domains is gone before any classifier sees it. Optionally each row is then
  L2-normalised (a per-image change of contrast or of text length no longer scales the features).
- **Curriculum self-training** (Cascante-Bonilla et al., AAAI 2021, "Curriculum labeling"): a
  logistic probe fitted on the normalised source pseudo-labels the target; in each round the
  most confident ``fraction`` of each predicted class (20%, 40%, ... 100%) joins the source and
  the probe is refitted. Taking a share *per predicted class* keeps a class the probe is unsure of
  from being starved of pseudo-labels.

The strength C of the probe is chosen on the labelled source validation split, never on target
labels. :func:`as_bottleneck_head` turns the result into a plain ``BottleneckHead`` carrying the
target's statistics as its ``mean`` / ``std`` buffers, so the saved model applies them to the data
it predicts (the target domain) with no new head type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..heads import BottleneckHead

NORMALISE = ("source", "per-domain")  # source: both domains on the source's statistics
CURRICULUM = (0.2, 0.4, 0.6, 0.8, 1.0)  # share of each predicted class pseudo-labelled per round
C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)
MIN_DOMAIN_ITEMS = 2  # a mean and a spread need at least two rows


def domain_statistics(x: np.ndarray, name: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and scale of one domain (the scale floored as the linear probe's is)."""
    from ..train.linear_probe import standardiser

    x = np.asarray(x)
    if x.ndim != 2:
        raise DataError(f"The {name} must be a 2-d array (items x features), got shape {x.shape}.",
                        fix="pass the backbone's pooled features, one row per item.")
    if len(x) < MIN_DOMAIN_ITEMS:
        raise DataError(f"The {name} hold {len(x)} item(s); per-domain statistics need at least {MIN_DOMAIN_ITEMS}.",
                        fix="give more target items, or use normalise='source'.")
    if not np.isfinite(x).all():
        raise DataError(f"The {name} contain NaN or infinite values.",
                        fix="check the inputs the features were extracted from.")
    mean, scale = standardiser(x)
    return mean.astype(np.float32), scale.astype(np.float32)


def normalise(x: np.ndarray, mean: np.ndarray, scale: np.ndarray, l2: bool = True) -> np.ndarray:
    """``(x - mean) / scale``, then each row to unit length when ``l2``."""
    z = (np.asarray(x, dtype=np.float32) - mean) / scale
    if l2:
        z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    return z


def _fit(x: np.ndarray, y: np.ndarray, k: int, C: float,
         init: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[np.ndarray, np.ndarray]:
    from ..train.logistic import fit_logistic

    w, b = fit_logistic(x, y, k, C=C, max_iter=300, init=init)
    return w.numpy(), b.numpy()


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def choose_strength(zs: np.ndarray, ys: np.ndarray, zv: np.ndarray, yv: np.ndarray, k: int,
                    grid: tuple[float, ...] = C_GRID) -> tuple[float, dict[float, float]]:
    """The C whose probe, fitted on the source training split, scores best on the source
    validation split (ties to the stronger regularisation)."""
    scores = {}
    for C in grid:
        w, b = _fit(zs, ys, k, C)
        scores[C] = float(((zv @ w.T + b).argmax(1) == yv).mean())
    best = max(grid, key=lambda c: (scores[c], -c))
    return best, scores


@dataclass
class SelfTrained:
    """A probe ``logits = z @ weight.T + bias`` on per-domain-normalised features."""

    weight: np.ndarray
    bias: np.ndarray
    C: float
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def proba(self, z: np.ndarray) -> np.ndarray:
        return _softmax(z @ self.weight.T + self.bias)


def curriculum_self_train(zs: np.ndarray, ys: np.ndarray, zt: np.ndarray, k: int, C: float,
                          curriculum: tuple[float, ...] = CURRICULUM, init: np.ndarray | None = None) -> SelfTrained:
    """Fit on the source, then for each share in ``curriculum``: pseudo-label the target, keep the
    most confident share of each predicted class, refit on source + kept target (warm-started).
    ``init``: target probabilities (items x k) of another model, whose labels and confidences make
    the first round's pseudo-labels instead of the source probe's."""
    if len(zs) != len(ys):
        raise DataError(f"{len(zs)} source rows but {len(ys)} source labels.", fix="pass one label per source row.")
    if zs.ndim != 2 or zt.ndim != 2 or zs.shape[1] != zt.shape[1]:
        raise DataError(f"The source features ({zs.shape}) and the target features ({zt.shape}) must be 2-d with "
                        "the same width.", fix="extract both with the same backbone.")
    if not curriculum or any(not 0 < f <= 1 for f in curriculum):
        raise ConfigError(f"The curriculum must be shares in (0, 1], got {list(curriculum)!r}.",
                          fix="e.g. (0.2, 0.4, 0.6, 0.8, 1.0).")
    if init is not None and np.shape(init) != (len(zt), k):
        raise DataError(f"The starting probabilities have shape {np.shape(init)}; expected ({len(zt)}, {k}), one row "
                        "per target item.", fix="pass the target probabilities of the model to start from.")
    w, b = _fit(zs, ys, k, C)
    rounds: list[dict[str, Any]] = []
    for i, share in enumerate(curriculum):
        p = np.asarray(init) if i == 0 and init is not None else _softmax(zt @ w.T + b)
        label, conf = p.argmax(1), p.max(1)
        keep: list[int] = []
        for c in range(k):
            idx = np.flatnonzero(label == c)
            keep.extend(idx[np.argsort(-conf[idx], kind="stable")][: int(math.floor(share * len(idx)))].tolist())
        kept = np.asarray(sorted(keep), dtype=np.int64)
        w, b = _fit(np.concatenate([zs, zt[kept]]), np.concatenate([ys, label[kept]]), k, C,
                    init=(torch.from_numpy(w), torch.from_numpy(b)))
        rounds.append({"share": share, "pseudo_labelled": len(kept)})
    return SelfTrained(w.astype(np.float32), b.astype(np.float32), C, rounds)


def as_bottleneck_head(weight: np.ndarray, bias: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> BottleneckHead:
    """A ``BottleneckHead`` computing exactly ``weight @ l2((x - mean) / scale) + bias`` (up to
    LayerNorm's epsilon), so that the statistics travel as its ``mean`` / ``std`` buffers.

    With ``fc1 = [I; -I]`` the bottleneck sees ``[z, -z]``, whose row mean is 0 and whose
    LayerNorm scale is ``|z| / sqrt(d)``: LayerNorm yields ``sqrt(d) [u, -u]`` with ``u = z / |z|``.
    ReLU splits it into the positive and negative parts, and ``fc2 = [W, -W] / sqrt(d)`` adds them
    back: ``W u + b``.
    """
    k, d = weight.shape
    head = BottleneckHead(d, k, 2 * d, 0.0)
    with torch.no_grad():
        eye = torch.eye(d)
        head.mean.copy_(torch.as_tensor(mean))
        head.std.copy_(torch.as_tensor(scale))
        head.fc1.weight.copy_(torch.cat([eye, -eye]))
        head.fc1.bias.zero_()
        head.norm.weight.fill_(1.0)
        head.norm.bias.zero_()
        w = torch.as_tensor(weight, dtype=torch.float32) / math.sqrt(d)
        head.fc2.weight.copy_(torch.cat([w, -w], dim=1))
        head.fc2.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return head.eval()


LABEL_SHIFT_SHARE = 0.5  # above this share of the target's mean shift explained by re-mixing classes: label shift


def mixture_explained_share(xs: np.ndarray, ys: np.ndarray, xt: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """How much of the shift of the target's mean a change of class proportions explains.

    In source-standardised units, the target mean is fitted by a mixture ``sum_c q_c mu_c`` of the
    source class means (``q`` on the simplex, non-negative least squares); the share is
    ``1 - |residual|^2 / |target mean - source mean|^2``. Near 1: the target looks like the source
    with other class proportions (label shift), where per-domain standardisation would remove
    the very signal of the new proportions (measured: BBC News with one class at 50%, 3 points
    lost). Near 0: the inputs moved (MNIST -> UCI digits: 0.02). Returns the share and ``q``.
    """
    from scipy.optimize import nnls

    mean, scale = domain_statistics(xs, "source features")
    zs, zt = (xs - mean) / scale, (np.asarray(xt) - mean) / scale
    present = [c for c in range(k) if (ys == c).any()]
    mu = np.stack([zs[ys == c].mean(0) for c in present]).astype(np.float64)
    target = zt.mean(0).astype(np.float64)
    total = float((target**2).sum())
    if total <= 1e-12:
        return 0.0, np.bincount(ys, minlength=k) / len(ys)
    weight = 100.0  # the sum-to-one row, weighted to hold almost exactly
    q, _ = nnls(np.vstack([mu.T, np.full((1, len(present)), weight)]), np.concatenate([target, [weight]]))
    share = 1.0 - float(((target - q @ mu) ** 2).sum()) / total
    full = np.zeros(k)
    full[present] = q
    return max(share, 0.0), full
