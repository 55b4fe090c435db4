"""OODScorer on synthetic Gaussian clusters: ordering, threshold rate, save/load, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from headstart.errors import ConfigError, DataError
from headstart.evaluation.ood import METHODS, OODScorer, auroc, fpr_at_tpr, scorer_size_bytes

D, K = 16, 3


def clusters(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three tight clusters on distinct directions; returns (features, labels, centres)."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((K, D))
    centres[np.arange(K), np.arange(K)] = 10.0
    y = np.repeat(np.arange(K), n_per_class)
    x = centres[y] + rng.normal(0, 0.5, (len(y), D))
    return x.astype(np.float32), y, centres


def far_points(n: int, seed: int) -> np.ndarray:
    """Points on directions no cluster uses, at the same norm (so L2 normalisation cannot hide them)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.5, (n, D))
    x[:, K:] += 10.0 / np.sqrt(D - K) * np.sign(rng.normal(size=(n, D - K)))
    return x.astype(np.float32)


def logits_of(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """A linear head that scores each class by its centre: confident in-cluster, flat far away."""
    return (x @ centres.T / 10.0).astype(np.float32)


def inputs(method: str, x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return logits_of(x, centres) if method in ("msp", "energy") else x


def fitted(method: str, seed: int = 0, **kw) -> tuple[OODScorer, np.ndarray]:  # type: ignore[no-untyped-def]
    x, y, c = clusters(100, seed)
    v, _, _ = clusters(100, seed + 1)
    return OODScorer(method, **kw).fit(inputs(method, x, c), y, inputs(method, v, c)), c


@pytest.mark.parametrize("method", METHODS)
def test_far_points_score_higher_than_cluster_points(method: str) -> None:
    scorer, c = fitted(method)
    inside, _, _ = clusters(50, 7)
    s_in = scorer.score(inputs(method, inside, c))
    s_out = scorer.score(inputs(method, far_points(150, 8), c))
    assert s_out.min() > s_in.max()  # perfectly separated ...
    assert auroc(s_in, s_out) == 1.0  # ... so AUROC is exactly 1 and nothing far away is accepted
    assert fpr_at_tpr(s_in, s_out) == 0.0
    assert scorer.unsure(s_out).all()


def test_auroc_and_fpr_match_analytic_values() -> None:
    # Identical score sets: every in/out pair ties, AUROC = 1/2; reversed sets: 0.
    s = np.arange(100, dtype=float)
    assert auroc(s, s) == pytest.approx(0.5)
    assert auroc(s + 100, s) == 0.0
    # Out scores spread like the in scores, shifted by d: AUROC = Phi(d / sqrt 2) for unit normals.
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 20000), rng.normal(1.0, 1, 20000)
    assert auroc(a, b) == pytest.approx(0.7602, abs=0.01)
    # FPR at 95% TPR for the same shift: P(N(1,1) <= 1.645) = Phi(0.645) = 0.7405.
    assert fpr_at_tpr(a, b) == pytest.approx(0.7405, abs=0.015)


@pytest.mark.parametrize("method", METHODS)
def test_threshold_flags_about_five_percent_of_in_distribution(method: str) -> None:
    x, y, c = clusters(400, 1)
    v, _, _ = clusters(400, 2)   # 1200 validation rows
    t, _, _ = clusters(400, 3)   # 1200 fresh in-distribution rows
    scorer = OODScorer(method).fit(inputs(method, x, c), y, inputs(method, v, c), quantile=0.95)
    on_val = scorer.unsure(scorer.score(inputs(method, v, c))).mean()
    assert on_val == pytest.approx(0.05, abs=1.5 / 1200)  # the quantile itself, up to ties at the threshold
    fresh = scorer.unsure(scorer.score(inputs(method, t, c))).mean()
    # Binomial noise of two 1200-row samples: sd of the difference ~ 0.009; 4 sd allowed.
    assert abs(fresh - 0.05) < 0.036


@pytest.mark.parametrize("method,kw", [("msp", {}), ("energy", {"temperature": 2.0}), ("mahalanobis", {}),
                                       ("mahalanobis", {"normalise": False, "dims": 4}), ("knn", {"k": 5})])
def test_spec_and_state_dict_round_trip(method: str, kw: dict, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    scorer, c = fitted(method, **kw)
    path = tmp_path / "ood.safetensors"
    save_file(scorer.state_dict(), str(path))
    spec = json.loads(json.dumps(scorer.spec()))
    again = OODScorer.from_spec(spec)
    again.load_state_dict(load_file(str(path)))
    probe = inputs(method, np.concatenate([clusters(20, 9)[0], far_points(20, 9)]), c)
    assert np.array_equal(scorer.score(probe), again.score(probe))
    assert again.spec() == spec
    assert float(again.threshold) == spec["threshold"] == pytest.approx(float(scorer.threshold))
    assert scorer_size_bytes(spec) == 4 + sum(t.numel() * 4 for n, t in scorer.state_dict().items() if n != "threshold")


def test_pca_projection_bounds_the_stored_matrix() -> None:
    scorer, _ = fitted("mahalanobis", dims=4)
    assert tuple(scorer.projection.shape) == (D, 4) and tuple(scorer.means.shape) == (K, 4)
    full, _ = fitted("mahalanobis", dims=None)
    assert tuple(full.projection.shape) == (D, D)
    narrow, _ = fitted("mahalanobis")  # the default keeps at most 256 axes: all 16 here
    assert tuple(narrow.projection.shape) == (D, D) and narrow.spec()["dims"] == 256


def test_knn_keeps_unit_training_rows() -> None:
    scorer, _ = fitted("knn")
    assert scorer.bank.shape == (300, D)
    assert torch.allclose(scorer.bank.norm(dim=1), torch.ones(300), atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_wrong_width_is_a_data_error_naming_both_sizes(method: str) -> None:
    scorer, _ = fitted(method)
    width = scorer.input_dim
    with pytest.raises(DataError, match=rf"has {width + 1} columns .* expects {width}"):
        scorer.score(np.zeros((2, width + 1), dtype=np.float32))
    with pytest.raises(DataError, match="2-D"):
        scorer.score(np.zeros(width, dtype=np.float32))


def test_bad_fit_arguments() -> None:
    x, y, _ = clusters(10, 0)
    with pytest.raises(ConfigError, match="not known"):
        OODScorer("odin")
    with pytest.raises(ConfigError, match="quantile"):
        OODScorer("knn").fit(x, y, x, quantile=1.5)
    with pytest.raises(DataError, match="`val_features` has 5 columns"):
        OODScorer("knn").fit(x, y, x[:, :5])
    with pytest.raises(DataError, match="train_labels"):
        OODScorer("mahalanobis").fit(x, y[:-1], x)
    with pytest.raises(DataError, match="NaN"):
        bad = x.copy()
        bad[3, 2] = np.nan
        OODScorer("mahalanobis").fit(bad, y, x)
    with pytest.raises(ConfigError, match="k=50"):
        OODScorer("knn", k=50).fit(x, y, x)
    with pytest.raises(ConfigError, match="dims"):
        OODScorer("mahalanobis", dims=0)
    with pytest.raises(DataError, match="train_features is empty"):
        OODScorer("knn").fit(x[:0], y[:0], x)
    failed = OODScorer("mahalanobis")
    with pytest.raises(DataError):
        failed.fit(x, None, x)
    with pytest.raises(ConfigError, match="not fitted"):
        failed.score(x)
    with pytest.raises(ConfigError, match="type"):
        OODScorer.from_spec({"method": "knn"})


def test_mahalanobis_matches_sklearn_ledoit_wolf_precision() -> None:
    from sklearn.covariance import LedoitWolf

    x, y, _ = clusters(30, 4)  # 90 rows in 16 dimensions
    scorer = OODScorer("mahalanobis", normalise=False, dims=None).fit(x, y, x)
    means = np.stack([x[y == c].mean(0) for c in range(K)]).astype(np.float64)
    precision = LedoitWolf(assume_centered=True).fit(x - means[y]).precision_
    q = far_points(5, 5).astype(np.float64)
    expected = np.min([np.einsum("nd,de,ne->n", q - m, precision, q - m) for m in means], axis=0)
    assert scorer.score(q) == pytest.approx(expected, rel=1e-3)


def test_fit_adds_an_out_of_scope_score_that_flags_unlike_inputs(tmp_path, bbc_small) -> None:
    """A BBC News model scores sentences far from its topics above its own articles, flags few of
    its own, and keeps scores and flags through save / load."""
    import headstart

    model = headstart.fit(bbc_small, backbone="minilm-l6", max_length=64, out=tmp_path / "m", progress=False,
                          baseline=False)
    assert model.ood is not None and model.info["strategy"]["details"]["ood"]["method"] == "mahalanobis"
    odd = ["I love your shop", "asdf qwerty zxcv", "The mitochondria is the powerhouse of the cell"]
    news = bbc_small.items[:30]
    proba, scores, unsure = model.predict_scored(odd + news)
    assert scores[:3].mean() > np.median(scores[3:])  # out-of-scope sentences score further away
    assert unsure[3:].mean() < 0.3
    again = headstart.load(tmp_path / "m")
    p2, s2, u2 = again.predict_scored(odd + news)
    assert np.array_equal(s2, scores) and np.array_equal(u2, unsure) and np.array_equal(p2, proba)


def test_predict_reports_unsure_and_abstains(tmp_path, bbc_small) -> None:
    import csv

    import headstart
    from click.testing import CliRunner
    from headstart.cli.main import cli

    run = tmp_path / "m"
    headstart.fit(bbc_small, backbone="minilm-l6", max_length=64, out=run, progress=False, baseline=False)
    odd = "asdf qwerty zxcv uiop"
    args = ["predict", str(run), "--text", odd, "--text", bbc_small.items[0], "-o"]
    result = CliRunner().invoke(cli, args + [str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "p.csv", encoding="utf-8")))
    assert rows[0]["unsure"] == "True" and rows[1]["unsure"] == "False" and float(rows[0]["ood_score"]) > 0
    assert rows[0]["prediction"] in bbc_small.label_names  # without --abstain: still the most likely class
    result = CliRunner().invoke(cli, args + [str(tmp_path / "a.csv"), "--abstain"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "a.csv", encoding="utf-8")))
    assert rows[0]["prediction"] == "unknown" and rows[1]["prediction"] == bbc_small.labels[0]

    # the REST server says the same
    from fastapi.testclient import TestClient
    from headstart.serve.app import create_app

    with TestClient(create_app(run)) as client:
        got = client.post("/predict", json={"texts": [odd, bbc_small.items[0]]}).json()["predictions"]
    assert [g["unsure"] for g in got] == [True, False] and got[0]["ood_score"] > got[1]["ood_score"]
