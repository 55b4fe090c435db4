"""Out-of-distribution ("I don't know") scores: higher means further from what the model was trained on.

Four scores, all pure numpy / torch with no I/O:

- ``msp``: minus the maximum softmax probability (Hendrycks & Gimpel, 2017), from logits;
- ``energy``: minus ``T * logsumexp(logits / T)`` (Liu et al., 2020), from logits;
- ``mahalanobis``: squared Mahalanobis distance to the nearest class mean under one shared,
  Ledoit-Wolf-shrunk covariance (Lee et al., 2018), from features;
- ``knn``: distance to the k-th nearest training feature after L2 normalisation (Sun et al., 2022),
  from features; it keeps the training features themselves.

:class:`OODScorer` holds what one method needs as buffers (so it saves as safetensors), a JSON
``spec()`` that rebuilds it, and a threshold fitted on in-distribution validation scores.
bench/ood.py measures the methods on real backbones; its results pick ``DEFAULT_METHOD``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError

METHODS = ("msp", "energy", "mahalanobis", "knn")
LOGIT_METHODS = ("msp", "energy")
# Measured by bench/ood.py (bench/results/ood.md): Mahalanobis on L2-normalised features projected to
# at most 256 principal axes had the best mean AUROC over the three tasks but for kNN (k=1), 0.003
# higher, which must store every training feature; MSP and energy fail on far-away photos.
DEFAULT_METHOD = "mahalanobis"
DEFAULT_DIMS = 256
SPEC_TYPE = "ood-scorer"
SPEC_VERSION = 1
_CHUNK = 1024  # query rows per distance block: bounds memory at _CHUNK x (classes or bank) floats


# --------------------------------------------------------------------------------------------- scores


def l2_normalise(x: np.ndarray | torch.Tensor) -> Any:
    if isinstance(x, torch.Tensor):
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Probability that an out-of-distribution item scores higher than an in-distribution one (ties half)."""
    from sklearn.metrics import roc_auc_score

    s = np.concatenate([in_scores, out_scores])
    y = np.concatenate([np.zeros(len(in_scores)), np.ones(len(out_scores))])
    return float(roc_auc_score(y, s))


def fpr_at_tpr(in_scores: np.ndarray, out_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Share of out-of-distribution items still accepted when the threshold keeps ``tpr`` of the
    in-distribution items (the usual "FPR at 95% TPR", in-distribution as the positive class)."""
    threshold = np.quantile(np.asarray(in_scores, dtype=np.float64), tpr)
    return float(np.mean(np.asarray(out_scores) <= threshold))


# --------------------------------------------------------------------------------------------- scorer


class OODScorer(torch.nn.Module):
    """One out-of-distribution score with its threshold, as a module of buffers.

    ``input`` says what ``forward`` reads: ``"features"`` (mahalanobis, knn: the backbone's pooled
    features) or ``"logits"`` (msp, energy: the head's outputs). ``fit`` learns the buffers from the
    training rows and sets the threshold at the ``quantile`` of the validation scores, so about
    ``1 - quantile`` of in-distribution items are flagged as unsure.

    Arguments (stored as given; ``fit`` does the work):
      method: one of ``METHODS``.
      normalise: L2-normalise features first (mahalanobis only; knn always normalises).
      dims: mahalanobis only: project onto at most this many principal axes of the within-class
        scatter first (``None``: keep all), which bounds the stored projection at
        ``input_dim x dims`` floats; features narrower than ``dims`` keep all their dimensions.
      k: knn only: which neighbour's distance is the score.
      temperature: energy only.
    """

    def __init__(self, method: str = DEFAULT_METHOD, *, normalise: bool = True, dims: int | None = DEFAULT_DIMS,
                 k: int = 10, temperature: float = 1.0) -> None:
        super().__init__()
        if method not in METHODS:
            raise ConfigError(f"OOD method {method!r} is not known; expected one of {', '.join(METHODS)}.",
                              fix=f"pass method='{DEFAULT_METHOD}' (the measured default).")
        if dims is not None and (not isinstance(dims, int) or dims < 1):
            raise ConfigError(f"`dims` must be a positive whole number or None, got {dims!r}.")
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"`k` must be a positive whole number, got {k!r}.")
        if not temperature > 0:
            raise ConfigError(f"`temperature` must be > 0, got {temperature!r}.")
        self.method = method
        self.normalise = bool(normalise)
        self.dims = dims
        self.k = k
        self.temperature = float(temperature)
        self.input_dim: int | None = None
        self.quantile: float | None = None
        self.shrinkage: float | None = None  # mahalanobis: the Ledoit-Wolf weight, for reports
        self.register_buffer("threshold", torch.tensor(float("inf")))
        # Shapes are fixed by fit or from_spec; empty until then.
        self.register_buffer("projection", torch.zeros(0, 0))  # mahalanobis: [input_dim, d], whitening included
        self.register_buffer("means", torch.zeros(0, 0))       # mahalanobis: [classes, d], already projected
        self.register_buffer("bank", torch.zeros(0, 0))        # knn: [n_train, input_dim], unit rows

    @property
    def input(self) -> str:
        return "logits" if self.method in LOGIT_METHODS else "features"

    @property
    def fitted(self) -> bool:
        return self.input_dim is not None

    # ----------------------------------------------------------------------------------------- fit

    def fit(self, train_features: np.ndarray | torch.Tensor, train_labels: np.ndarray | None,
            val_features: np.ndarray | torch.Tensor, quantile: float = 0.95) -> OODScorer:
        """Learn the method's buffers from ``train_features`` (logits for msp / energy) and integer
        ``train_labels``, then set the threshold at ``quantile`` of the scores of ``val_features``
        (in-distribution validation rows). Returns ``self``."""
        if not 0.0 < quantile < 1.0:
            raise ConfigError(f"`quantile` must be between 0 and 1 (exclusive), got {quantile!r}.",
                              fix="pass 0.95 to flag about 5% of in-distribution items.")
        x = self._matrix(train_features, "train_features", None)
        v = self._matrix(val_features, "val_features", x.shape[1])
        if len(x) == 0 or len(v) == 0:
            raise DataError(f"{'train_features' if len(x) == 0 else 'val_features'} is empty; the scorer learns from "
                            "training rows and sets its threshold on in-distribution validation rows.",
                            fix="pass at least one row of each (20 or more validation rows for a stable threshold).")
        if self.method == "mahalanobis":
            y = self._labels(train_labels, len(x))
            self._fit_mahalanobis(x, y)
        elif self.method == "knn":
            if len(x) < self.k:
                raise ConfigError(f"knn with k={self.k} needs at least {self.k} training rows, got {len(x)}.",
                                  fix="lower `k` or pass more training rows.")
            self.bank = torch.as_tensor(l2_normalise(x), dtype=torch.float32).contiguous()
        self.quantile = float(quantile)
        self.input_dim = int(x.shape[1])  # only now: a fit that raised above leaves the scorer unfitted
        scores = self.score(v)
        self.threshold = torch.tensor(float(np.quantile(scores, quantile)), dtype=torch.float32)
        return self

    def _fit_mahalanobis(self, x: np.ndarray, y: np.ndarray) -> None:
        from sklearn.covariance import ledoit_wolf_shrinkage

        x = np.asarray(l2_normalise(x) if self.normalise else x, dtype=np.float64)
        classes = np.unique(y)
        means = np.stack([x[y == c].mean(0) for c in classes])
        centred = x - means[np.searchsorted(classes, y)]
        # One eigendecomposition does everything: the Ledoit-Wolf estimate (1 - s) S + s mean(eig) I
        # has the eigenvectors of the within-class scatter S, which are also its principal axes, so
        # PCA to `dims` keeps the leading ones and the shrunk precision is diagonal in that basis.
        evals, evecs = np.linalg.eigh(centred.T @ centred / len(x))
        order = np.argsort(evals)[::-1][: self.dims or len(evals)]
        basis, lam = evecs[:, order], np.maximum(evals[order], 0.0)
        shrink = float(ledoit_wolf_shrinkage(centred @ basis, assume_centered=True))
        shrunk = (1.0 - shrink) * lam + shrink * lam.mean()
        # precision = W W^T with W = basis / sqrt(shrunk): ||(x - mu) W||^2 is the Mahalanobis distance
        # and one [D, d] matrix does both the projection and the whitening.
        projection = basis / np.sqrt(np.maximum(shrunk, 1e-12 * max(float(shrunk.max()), 1e-30)))
        self.shrinkage = shrink
        self.projection = torch.as_tensor(projection, dtype=torch.float32).contiguous()
        self.means = torch.as_tensor(means @ projection, dtype=torch.float32).contiguous()

    # ----------------------------------------------------------------------------------------- score

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Scores ``[N]`` for ``features`` ``[N, input_dim]`` (logits for msp / energy); higher = more OOD."""
        if not self.fitted:
            raise ConfigError("This OODScorer is not fitted.", fix="call fit(...) or build it with from_spec(...).")
        x = features if isinstance(features, torch.Tensor) else torch.as_tensor(np.asarray(features))
        self._check_shape(tuple(x.shape), "features", self.input_dim)
        x = x.to(torch.float32)
        if self.method == "msp":
            return -torch.softmax(x, dim=1).amax(1)
        if self.method == "energy":
            return -self.temperature * torch.logsumexp(x / self.temperature, dim=1)
        out = torch.empty(len(x), dtype=torch.float32, device=x.device)
        for i in range(0, len(x), _CHUNK):
            out[i:i + _CHUNK] = self._distance(x[i:i + _CHUNK])
        return out

    def _distance(self, x: torch.Tensor) -> torch.Tensor:
        if self.method == "mahalanobis":
            z = (l2_normalise(x) if self.normalise else x) @ self.projection
            return torch.cdist(z, self.means).pow(2).amin(1)
        # Unit rows: squared distance = 2 - 2 cos; the k-th largest cosine is the k-th nearest neighbour.
        cos = l2_normalise(x) @ self.bank.T
        kth = cos.topk(min(self.k, cos.shape[1]), dim=1).values[:, -1]
        return (2.0 - 2.0 * kth).clamp_min(0.0).sqrt()

    @torch.no_grad()
    def score(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """``forward`` as a float64 numpy array."""
        return self.forward(torch.as_tensor(np.asarray(features)) if not isinstance(features, torch.Tensor)
                            else features).double().cpu().numpy()

    def unsure(self, scores: np.ndarray | torch.Tensor) -> np.ndarray:
        """True where a score lies above the fitted threshold."""
        s = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
        return np.asarray(s > float(self.threshold), dtype=bool)

    # ----------------------------------------------------------------------------------------- spec

    def spec(self) -> dict[str, Any]:
        """JSON-able description: with the state_dict it rebuilds this scorer exactly."""
        if not self.fitted:
            raise ConfigError("This OODScorer is not fitted; there is no spec to save.", fix="call fit(...) first.")
        return {"type": SPEC_TYPE, "version": SPEC_VERSION, "method": self.method, "input": self.input,
                "input_dim": self.input_dim, "normalise": self.normalise, "dims": self.dims,
                "projected_dim": int(self.projection.shape[1]), "classes": int(self.means.shape[0]),
                "bank_size": int(self.bank.shape[0]), "k": self.k, "temperature": self.temperature,
                "quantile": self.quantile, "threshold": float(self.threshold)}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> OODScorer:
        """An OODScorer with buffers of the right shapes; load the state_dict next for the values."""
        if not isinstance(spec, dict) or spec.get("type") != SPEC_TYPE:
            raise ConfigError(f"OOD spec must be a dict with type '{SPEC_TYPE}', got {spec!r:.200}.",
                              fix="pass what OODScorer.spec() returned.")
        if spec.get("version") != SPEC_VERSION:
            raise ConfigError(f"OOD spec version {spec.get('version')!r} is not supported (expected {SPEC_VERSION}).",
                              fix="refit the scorer with this version of headstart.")
        try:
            self = cls(spec["method"], normalise=bool(spec["normalise"]), dims=spec["dims"], k=int(spec["k"]),
                       temperature=float(spec["temperature"]))
            d, p = int(spec["input_dim"]), int(spec["projected_dim"])
            c, n = int(spec["classes"]), int(spec["bank_size"])
            quantile, threshold = spec["quantile"], float(spec["threshold"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"OOD spec is missing or has a malformed field ({exc}).",
                              fix="pass what OODScorer.spec() returned.") from None
        if min(d, p, c, n) < 0 or d == 0:
            raise ConfigError(f"OOD spec has impossible sizes (input_dim={d}, projected_dim={p}, classes={c}, "
                              f"bank_size={n}).", fix="pass what OODScorer.spec() returned.")
        self.input_dim = d
        self.quantile = None if quantile is None else float(quantile)
        self.threshold = torch.tensor(threshold, dtype=torch.float32)
        self.projection = torch.zeros(d if p else 0, p)
        self.means = torch.zeros(c, p)
        self.bank = torch.zeros(n, d if n else 0)
        return self

    # ----------------------------------------------------------------------------------------- checks

    def _check_shape(self, shape: tuple[int, ...], name: str, width: int | None) -> None:
        what = "logits" if self.input == "logits" else "features"
        if len(shape) != 2:
            raise DataError(f"`{name}` must be a 2-D array [rows, {width or 'dims'}] of {what}, got shape {shape}.",
                            fix="pass one row per item.")
        if width is not None and shape[1] != width:
            raise DataError(f"`{name}` has {shape[1]} columns but this {self.method} OOD scorer expects {width} "
                            f"{what}.", fix=f"pass the {what} of the same backbone and head it was fitted on.")

    def _matrix(self, x: Any, name: str, width: int | None) -> np.ndarray:
        arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        self._check_shape(arr.shape, name, width)
        if not np.issubdtype(arr.dtype, np.number):
            raise DataError(f"`{name}` must hold numbers, got dtype {arr.dtype}.")
        arr = arr.astype(np.float32, copy=False)
        if not np.isfinite(arr).all():
            raise DataError(f"`{name}` holds NaN or infinite values (row {int(np.argwhere(~np.isfinite(arr))[0, 0])}).",
                            fix="check the backbone's output for those rows.")
        return arr

    def _labels(self, labels: Any, n: int) -> np.ndarray:
        if labels is None:
            raise DataError(f"{self.method} needs `train_labels` (one integer class per training row).")
        y = np.asarray(labels)
        if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"`train_labels` must be {n} integers (one per training row), got shape {y.shape} "
                            f"and dtype {y.dtype}.", fix="encode the class names as integers first.")
        return y.astype(np.int64)


def scorer_size_bytes(spec: dict[str, Any]) -> int:
    """float32 bytes of the buffers a spec describes (what the artifact grows by)."""
    d, p = spec["input_dim"], spec["projected_dim"]
    return 4 * ((d * p if p else 0) + spec["classes"] * p + spec["bank_size"] * d + 1)
