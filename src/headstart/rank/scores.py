"""Transferability scores: pure functions of (features, labels[, source probabilities]) -> float.

Higher is better for every score. No I/O; NumPy only (plus scikit-learn's Ledoit-Wolf estimator).

- LogME (You et al., ICML 2021; the fixed-point evidence maximisation of the JMLR extension):
  per class, the log marginal evidence of a Bayesian linear regression of the one-hot target on the
  features, maximised over the prior precision alpha and the noise precision beta, averaged.
- H-score (Bao et al., 2019): tr(cov(f)^-1 cov(E[f | y])); the shrinkage version (Ibrahim et al.,
  2022) replaces cov(f) by its Ledoit-Wolf estimate, which stays stable when D is close to N.
- NCE (Tran et al., 2019): -H(Y | Z), Z the source model's top-1 class.
- LEEP (Nguyen et al., 2020): mean log of the expected empirical predictor sum_z P(y | z) p(z | x).
- kNN: leave-one-out accuracy of a cosine k-nearest-neighbour classifier.
- Linear probe: cross-validated accuracy of headstart's probe (the slow reference).
"""

from __future__ import annotations

import numpy as np


def _onehot(labels: np.ndarray) -> tuple[np.ndarray, int]:
    classes, y = np.unique(labels, return_inverse=True)
    return np.eye(len(classes))[y], len(classes)


def logme(features: np.ndarray, labels: np.ndarray, max_iter: int = 100, tol: float = 1e-6) -> float:
    """LogME evidence per example, averaged over classes (one-vs-rest one-hot regression targets)."""
    f = np.asarray(features, dtype=np.float64)
    n, d = f.shape
    targets, k = _onehot(labels)
    # Everything below needs only the singular values s of F and z = U^T y per class (F = U S V^T),
    # so one decomposition serves all classes. N > D: eigendecompose the D x D Gram matrix
    # (z = V^T F^T y / s, never an N x D matrix: 50 000 x 2048 features fit and take seconds);
    # N <= D: thin SVD of F.
    if n > d:
        sigma, v = np.linalg.eigh(f.T @ f)
        sigma = np.clip(sigma, 0.0, None)
        s = np.sqrt(sigma)
        keep = s > s.max() * 1e-10
        s, sigma = s[keep], sigma[keep]
        zs = (v[:, keep].T @ (f.T @ targets)) / s[:, None]  # [rank, K]
    else:
        u, s, _ = np.linalg.svd(f, full_matrices=False)
        sigma = s**2
        zs = u.T @ targets
    evidences = []
    for c in range(k):
        y = targets[:, c]
        z = zs[:, c]
        y_norm2 = float(y @ y)
        residual_out = max(y_norm2 - float(z @ z), 0.0)  # the part of y outside the column space of F
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            denom = alpha + beta * sigma
            gamma = float((beta * sigma / denom).sum())
            m2 = float(((beta * s * z / denom) ** 2).sum())  # ||m||^2
            res2 = residual_out + float(((alpha * z / denom) ** 2).sum())  # ||y - F m||^2
            new_alpha = gamma / (m2 + 1e-12)
            new_beta = (n - gamma) / (res2 + 1e-12)
            done = abs(new_alpha / new_beta - alpha / beta) <= tol * (alpha / beta)
            alpha, beta = new_alpha, new_beta
            if done:
                break
        denom = alpha + beta * sigma
        m2 = float(((beta * s * z / denom) ** 2).sum())
        res2 = residual_out + float(((alpha * z / denom) ** 2).sum())
        logdet = float(np.log(denom).sum()) + (d - len(s)) * np.log(alpha)
        evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - logdet / 2 - beta / 2 * res2 - alpha / 2 * m2
                    - n / 2 * np.log(2 * np.pi))
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def hscore(features: np.ndarray, labels: np.ndarray) -> float:
    """tr(cov(f)^+ cov(E[f | y])) (Bao et al., 2019), the pseudo-inverse as in the paper's code."""
    f = np.asarray(features, dtype=np.float64)
    return _hscore_from(f - f.mean(0), labels, shrink=False)


def hscore_shrinkage(features: np.ndarray, labels: np.ndarray) -> float:
    """H-score with the Ledoit-Wolf shrunk covariance (Ibrahim et al., 2022): well-posed when
    there are fewer examples than feature dimensions, where the plain H-score saturates."""
    f = np.asarray(features, dtype=np.float64)
    return _hscore_from(f - f.mean(0), labels, shrink=True)


def _ledoit_wolf_shrinkage(f: np.ndarray, lam: np.ndarray) -> float:
    """scikit-learn's ``ledoit_wolf_shrinkage(f, assume_centered=True)``, from the eigenvalues
    ``lam`` of f'f already at hand: its O(n d^2) blocked sums become ||f'f||_F^2 = sum(lam^2)
    and sum_i |f_i|^4, so the cost is O(n d) on top of the decomposition."""
    n, d = f.shape
    if d == 1:
        return 0.0
    row_sq = (f**2).sum(1)
    trace = float(row_sq.sum()) / n  # tr(S), S = f'f / n
    mu = trace / d
    delta_ = float((lam**2).sum()) / n**2  # ||S||_F^2
    beta = (float((row_sq**2).sum()) / n - delta_) / (d * n)
    delta = (delta_ - 2.0 * mu * trace + d * mu**2) / d
    beta = min(beta, delta)
    return 0.0 if beta == 0 else beta / delta


def _hscore_from(f: np.ndarray, labels: np.ndarray, shrink: bool) -> float:
    """``tr(C^-1 cov_g)`` with ``C`` the (optionally shrunk) feature covariance, through the
    eigen-decomposition of the scatter ``f'f`` taken in whichever of the example or feature space is
    smaller: O(min(n, d)^2 max(n, d)) instead of a d x d pseudo-inverse (seconds saved per candidate
    for raw-pixel or ViT-sized features)."""
    n, d = f.shape
    classes, y = np.unique(labels, return_inverse=True)
    means = np.stack([f[y == c].mean(0) for c in range(len(classes))])
    g = means[y]  # E[f | y] for every example; centred because f is
    if n < d:
        _, s, vt = np.linalg.svd(f, full_matrices=False)
        lam, v = s**2, vt.T
    else:
        lam, v = np.linalg.eigh(f.T @ f)
        lam = np.clip(lam, 0.0, None)
    proj = ((g @ v) ** 2).sum(0)  # |g v_k|^2 per eigen-direction of the scatter
    if not shrink:
        # cov_f = f'f / (n-1), cov_g = g'g / (n-1): the (n-1) cancel; pinv drops near-null directions
        keep = lam > 1e-15 * lam.max()
        return float((proj[keep] / lam[keep]).sum())
    # Ledoit-Wolf: C = (1 - a) f'f / n + a mu I, mu = tr(f'f / n) / d; directions outside the
    # scatter's span have eigenvalue a mu and carry the rest of |g|^2.
    shrinkage = _ledoit_wolf_shrinkage(f, lam)
    floor = shrinkage * float(lam.sum()) / (n * d)  # a * mu: tr(f'f) is the eigenvalues' sum
    inside = (proj / ((1 - shrinkage) * lam / n + floor)).sum() if floor > 0 else (proj[lam > 0] / lam[lam > 0] * n).sum()
    outside = max(float((g**2).sum()) - float(proj.sum()), 0.0) / floor if floor > 0 else 0.0
    return float((inside + outside) / (n - 1))


def nce(source_probs: np.ndarray, labels: np.ndarray) -> float:
    z = np.asarray(source_probs).argmax(1)
    _, y = np.unique(labels, return_inverse=True)
    joint = np.zeros((z.max() + 1, y.max() + 1))
    np.add.at(joint, (z, y), 1.0)
    joint /= joint.sum()
    pz = joint.sum(1, keepdims=True)
    nz = joint > 0
    cond = np.where(nz, joint / np.where(pz > 0, pz, 1), 1.0)
    return float((joint[nz] * np.log(cond[nz])).sum())  # = -H(Y | Z)


def leep(source_probs: np.ndarray, labels: np.ndarray) -> float:
    theta = np.asarray(source_probs, dtype=np.float64)
    _, y = np.unique(labels, return_inverse=True)
    n = len(y)
    joint = np.zeros((theta.shape[1], y.max() + 1))
    np.add.at(joint.T, y, theta)  # joint[z, y] = sum_i theta_iz [y_i = y]
    joint /= n
    cond = joint / np.maximum(joint.sum(1, keepdims=True), 1e-300)  # P(y | z)
    eep = theta @ cond  # [N, K]: sum_z P(y | z) theta_z
    return float(np.mean(np.log(eep[np.arange(n), y] + 1e-300)))


def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 5, chunk: int = 2048,
                 max_examples: int = 10_000) -> float:
    """Leave-one-out accuracy of cosine kNN (majority vote, ties to the nearest).

    The cost is quadratic in the examples, so above ``max_examples`` it is estimated on a seeded
    random subset of that size (neighbours drawn from the subset too): 10 000 keep the estimate's
    standard error under 0.5 points and the time to seconds."""
    if len(labels) > max_examples:
        keep = np.sort(np.random.default_rng(0).choice(len(labels), max_examples, replace=False))
        features, labels = np.asarray(features)[keep], np.asarray(labels)[keep]
    f = np.asarray(features, dtype=np.float32)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    _, y = np.unique(labels, return_inverse=True)
    k = min(k, len(y) - 1)
    correct = 0
    for start in range(0, len(y), chunk):
        sims = f[start:start + chunk] @ f.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf  # leave the example itself out
        nearest = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.take_along_axis(sims, nearest, 1).argsort(1)[:, ::-1]
        nearest = np.take_along_axis(nearest, order, 1)
        for i, nb in enumerate(nearest):
            votes = np.bincount(y[nb], minlength=y.max() + 1)
            best = np.flatnonzero(votes == votes.max())
            pred = next(y[j] for j in nb if y[j] in best)
            correct += pred == y[start + i]
    return correct / len(y)


def probe_cv_accuracy(features: np.ndarray, labels: np.ndarray, folds: int = 3, seed: int = 0) -> float:
    """Cross-validated accuracy of headstart's linear probe (C chosen on an inner split)."""
    import torch
    from sklearn.model_selection import StratifiedKFold

    from ..train.linear_probe import LinearProbeConfig, linear_probe

    _, y = np.unique(labels, return_inverse=True)
    k = int(y.max()) + 1
    folds = max(2, min(folds, int(np.bincount(y).min())))
    accs = []
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, y):
        cut = max(1, len(train) // 5)
        head, _ = linear_probe(features[train[cut:]], y[train[cut:]], features[train[:cut]], y[train[:cut]], k,
                               LinearProbeConfig(Cs=tuple(np.logspace(-3, 3, 7))), seed=seed)
        with torch.no_grad():
            accs.append(float((head(torch.as_tensor(features[test], dtype=torch.float32)).argmax(1).numpy()
                               == y[test]).mean()))
    return float(np.mean(accs))
