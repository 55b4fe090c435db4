"""The linear probe against scikit-learn, and transfer against the baselines, on real weights and data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from headstart.adapt.linear_probe import LinearProbeConfig, linear_probe, standardiser
from headstart.api import encode_labels
from headstart.data import split
from headstart.evaluate.baselines import baseline_proba
from headstart.features import extract_features


@pytest.fixture(scope="module")
def mnist_features(lite0, mnist_small):
    parts = split(mnist_small, seed=0)
    names = mnist_small.label_names
    feats = {s: extract_features(lite0, getattr(parts, s), progress=False) for s in ("train", "val", "test")}
    ys = {s: encode_labels(getattr(parts, s).labels, names, s) for s in feats}
    return parts, feats, ys


def _acc(head, x, y) -> float:
    with torch.no_grad():
        return float((head(torch.as_tensor(x)).argmax(1).numpy() == y).mean())


@pytest.mark.slow
def test_probe_matches_sklearn_logistic_regression(mnist_features) -> None:
    """Same features, same split, same C: our L-BFGS solver and scikit-learn agree within 0.5 points."""
    _, f, y = mnist_features
    for C in (0.01, 0.1, 1.0):
        head, _ = linear_probe(f["train"], y["train"], f["val"], y["val"], 10,
                               LinearProbeConfig(Cs=(C,), refit_on_val=False))
        mean, std = standardiser(f["train"])  # the same inputs for both solvers
        ref = LogisticRegression(C=C, max_iter=5000, tol=1e-6).fit((f["train"] - mean) / std, y["train"])
        ours = _acc(head, f["test"], y["test"])
        theirs = float((ref.predict((f["test"] - mean) / std) == y["test"]).mean())
        assert abs(ours - theirs) <= 0.005, (C, ours, theirs)
        # Not only the same accuracy: the same probabilities.
        with torch.no_grad():
            p_ours = head(torch.as_tensor(f["test"])).softmax(1).numpy()
        assert np.abs(p_ours - ref.predict_proba((f["test"] - mean) / std)).max() < 0.02


@pytest.mark.slow
def test_pretrained_features_beat_raw_pixels_on_mnist(mnist_features) -> None:
    parts, f, y = mnist_features
    head, info = linear_probe(f["train"], y["train"], f["val"], y["val"], 10)
    probe = _acc(head, f["test"], y["test"])
    proba, _ = baseline_proba(parts.train, parts.val, parts.test, y["train"], y["val"], 10)
    base = float((proba.argmax(1) == y["test"]).mean())
    assert probe >= 0.88, probe  # 60 digits per class, ImageNet features
    assert probe >= base + 0.03, (probe, base)
    assert info["C"] in LinearProbeConfig().Cs and len(info["sweep"]) == len(LinearProbeConfig().Cs)


@pytest.mark.slow
def test_minilm_probe_on_bbc_news(minilm, bbc_small) -> None:
    parts = split(bbc_small, seed=0)
    names = bbc_small.label_names
    f = {s: extract_features(minilm, getattr(parts, s), progress=False) for s in ("train", "val", "test")}
    y = {s: encode_labels(getattr(parts, s).labels, names, s) for s in f}
    head, _ = linear_probe(f["train"], y["train"], f["val"], y["val"], 5)
    assert _acc(head, f["test"], y["test"]) >= 0.85  # 5 topics, chance is 0.2


def test_mlp_head_learns_separable_features() -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 16)) * 4
    y = rng.integers(0, 3, 300)
    x = (centers[y] + rng.normal(size=(300, 16))).astype(np.float32)
    head, info = linear_probe(x[:200], y[:200], x[200:250], y[200:250], 3, LinearProbeConfig(head="mlp"))
    assert _acc(head, x[250:], y[250:]) >= 0.95
    assert head.spec()["type"] == "mlp"


def test_probe_config_validation() -> None:
    from headstart.errors import ConfigError

    with pytest.raises(ConfigError, match="`Cs` must be positive"):
        LinearProbeConfig(Cs=(0.0,))
    with pytest.raises(ConfigError, match="`head` must be 'linear' or 'mlp', got 'svm'"):
        LinearProbeConfig(head="svm")  # type: ignore[arg-type]


def test_nearly_dead_features_do_not_get_huge_weights() -> None:
    """A feature that barely varies in training must not dominate when it moves a little later."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    x[:, 7] = rng.normal(scale=1e-4, size=200)  # a nearly dead channel
    y = (x[:, 0] > 0).astype(int)
    head, _ = linear_probe(x[:150], y[:150], x[150:], y[150:], 2)
    w = np.abs(head.weight.detach().numpy())
    assert w[:, 7].max() < 20 * w[:, 0].max()
    shifted = x[150:].copy()
    shifted[:, 7] += 0.01  # a small shift of the dead channel in deployment
    with torch.no_grad():
        same = (head(torch.as_tensor(shifted)).argmax(1) == head(torch.as_tensor(x[150:])).argmax(1)).float().mean()
    assert same == 1.0


def test_constant_features_do_not_break_the_probe() -> None:
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=(60, 4)), np.ones((60, 3))], 1).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    head, _ = linear_probe(x[:40], y[:40], x[40:50], y[40:50], 2)
    assert np.isfinite(head.weight.detach().numpy()).all()
    assert _acc(head, x[50:], y[50:]) >= 0.8
