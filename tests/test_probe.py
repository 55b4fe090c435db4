"""The linear probe against scikit-learn, and transfer against the baselines, on real weights and data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from headstart.train.linear_probe import LinearProbeConfig, edge_warning, linear_probe, standardiser
from headstart.workflows.pipeline import encode_labels
from headstart.data import split
from headstart.evaluation.baselines import baseline_proba
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


@pytest.mark.slow
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

    with pytest.raises(ConfigError, match="`Cs` must be a non-empty list of values, each a finite number > 0"):
        LinearProbeConfig(Cs=(0.0,))
    with pytest.raises(ConfigError, match="`head` must be one of linear, mlp, got 'svm'"):
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


@pytest.fixture(scope="module")
def digits_problem():
    """A small fixed problem: scikit-learn's 8x8 digits (ships with it), 500 train / 300 val / 300 test."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    return (x[:500], y[:500]), (x[500:800], y[500:800]), (x[800:1100], y[800:1100])


def test_probe_sweep_agrees_with_scikit_learn(digits_problem) -> None:
    """The same C grid fitted by scikit-learn (lbfgs, warm-started along the grid, on the same
    standardised features) gives the same validation accuracies, the same chosen C, and after the
    refit on train + val the same test accuracy."""
    (xtr, ytr), (xva, yva), (xte, yte) = digits_problem
    cs = tuple(float(c) for c in np.logspace(-4, 2, 7))
    head, info = linear_probe(xtr, ytr, xva, yva, 10, LinearProbeConfig(Cs=cs))
    mean, std = standardiser(xtr)
    ref = LogisticRegression(warm_start=True, max_iter=500, tol=1e-6)
    ref_acc = []
    for C in cs:
        ref.set_params(C=C).fit((xtr - mean) / std, ytr)
        ref_acc.append(float((ref.predict((xva - mean) / std) == yva).mean()))
    ours = [r["val_accuracy"] for r in info["sweep"]]
    assert [r["C"] for r in info["sweep"]] == list(cs)
    assert np.abs(np.array(ours) - ref_acc).max() <= 1 / len(yva) + 1e-9, (ours, ref_acc)
    assert 0 < cs.index(info["C"]) < len(cs) - 1  # this problem's best C lies inside the grid
    assert ref_acc[cs.index(info["C"])] >= max(ref_acc) - 1 / len(yva)
    x_all, y_all = np.concatenate([xtr, xva]), np.concatenate([ytr, yva])
    mean, std = standardiser(x_all)
    refit = LogisticRegression(C=info["C"], max_iter=500, tol=1e-6).fit((x_all - mean) / std, y_all)
    theirs = float((refit.predict((xte - mean) / std) == yte).mean())
    assert abs(_acc(head, xte, yte) - theirs) <= 2 / len(yte), (_acc(head, xte, yte), theirs)
    assert _acc(head, xte, yte) >= 0.85
    assert "warnings" not in info and "reasons" not in info
    assert head.spec() == {"type": "linear", "in_features": 64, "num_classes": 10}


def test_torch_solver_on_cpu_agrees_with_the_cpu_solver(digits_problem) -> None:
    """The torch L-BFGS path (what a GPU runs) reaches the same minimiser and the same choice."""
    from headstart.train.linear_probe import _fit_cpu, _fit_device
    from headstart.train.logistic import fit_logistic_sklearn, fit_logistic_torch

    (xtr, ytr), (xva, yva), _ = digits_problem
    xtr, ytr = xtr[:200], ytr[:200]
    mean, std = standardiser(xtr)
    z = (xtr - mean) / std
    w_np, b_np, _ = fit_logistic_sklearn(z, ytr, 10, 0.1, tol=1e-7)
    w_t, b_t = fit_logistic_torch(z, ytr, 10, 0.1, tol=1e-7)
    assert np.abs(w_t.numpy() - w_np).max() < 1e-3
    # the intercepts are defined up to a shared constant (softmax ignores it): compare them centred
    b_np, b_t = b_np - b_np.mean(), b_t.numpy() - b_t.numpy().mean()
    assert np.abs(b_t - b_np).max() < 1e-3
    config = LinearProbeConfig(Cs=(1e-3, 1e-1))
    cpu, dev = _fit_cpu(xtr, ytr, xva, yva, 10, config), _fit_device(xtr, ytr, xva, yva, 10, config, torch.device("cpu"))
    assert cpu[4] == dev[4]  # the chosen C
    assert [r["val_accuracy"] for r in cpu[5]] == pytest.approx([r["val_accuracy"] for r in dev[5]], abs=2 / len(yva))


def test_edge_of_grid_warning() -> None:
    cs = (0.01, 0.1, 1.0)
    assert "C=1 is the largest value tried; the best may lie beyond it" in edge_warning(1.0, cs)
    assert "C=0.01 is the smallest value tried; the best may lie beyond it" in edge_warning(0.01, cs)
    assert edge_warning(0.1, cs) is None
    assert edge_warning(5.0, (5.0,)) is None  # a single C was not searched


def test_probe_warns_when_the_best_C_is_the_largest_tried() -> None:
    """Well-separated classes: weaker regularisation keeps lowering the validation loss, so the
    largest C of a low grid wins, and the user is told the search stopped short."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = (np.eye(3)[y] * 6 + rng.normal(size=(300, 3))).astype(np.float32)
    head, info = linear_probe(x[:200], y[:200], x[200:], y[200:], 3, LinearProbeConfig(Cs=(1e-4, 1e-3, 1e-2)))
    assert info["C"] == 1e-2
    assert info["warnings"] == info["reasons"]
    assert "C=0.01 is the largest value tried" in info["warnings"][0]


def test_two_classes_are_the_same_multinomial_model_on_both_solvers(digits_problem) -> None:
    """scikit-learn fits one weight vector for two classes; mapped back it is the two-row softmax model
    the torch solver finds, at the same C (not at half or twice its strength)."""
    from headstart.train.logistic import fit_logistic_sklearn, fit_logistic_torch

    (xtr, ytr), _, _ = digits_problem
    keep = (ytr == 3) | (ytr == 8)
    z, y = xtr[keep][:150], (ytr[keep][:150] == 8).astype(np.int64)
    mean, std = standardiser(z)
    z = (z - mean) / std
    w_sk, b_sk, _ = fit_logistic_sklearn(z, y, 2, 0.05, tol=1e-8)
    w_t, b_t = fit_logistic_torch(z, y, 2, 0.05, tol=1e-8)
    assert np.abs(w_sk - w_t.numpy()).max() < 1e-3
    assert np.abs((b_sk[1] - b_sk[0]) - float(b_t[1] - b_t[0])) < 1e-3


def test_a_class_missing_from_the_training_labels_gets_no_probability(digits_problem) -> None:
    from headstart.train.logistic import fit_logistic_sklearn

    (xtr, ytr), _, _ = digits_problem
    keep = ytr < 9  # class 9 never seen
    w, b, _ = fit_logistic_sklearn(xtr[keep][:300], ytr[keep][:300], 10, 1.0)
    assert w.shape == (10, xtr.shape[1]) and not w[9].any()
    logits = xtr[:50] @ w.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert p[:, 9].max() < 1e-6
