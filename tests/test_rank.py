"""Transferability scores: against direct implementations of the papers' formulas, properties over
every registered ranker, and clear errors for degenerate inputs."""

from __future__ import annotations


import numpy as np
import pytest

from headstart.errors import ConfigError, DataError
from headstart.rank import RANKERS, RankWarning, score
from headstart.rank import scores as S


def logme_direct(f: np.ndarray, labels: np.ndarray, max_iter: int = 100, tol: float = 1e-6) -> float:
    """The LogME algorithm written with explicit D x D matrices (You et al., Algorithm 1)."""
    n, d = f.shape
    eig = np.linalg.eigvalsh(f.T @ f)
    out = []
    for c in np.unique(labels):
        y = (labels == c).astype(float)
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            a = alpha * np.eye(d) + beta * f.T @ f
            m = beta * np.linalg.solve(a, f.T @ y)
            gamma = float((beta * eig / (alpha + beta * eig)).sum())
            new_alpha = gamma / (m @ m + 1e-12)
            new_beta = (n - gamma) / (((y - f @ m) ** 2).sum() + 1e-12)
            done = abs(new_alpha / new_beta - alpha / beta) <= tol * (alpha / beta)
            alpha, beta = new_alpha, new_beta
            if done:
                break
        a = alpha * np.eye(d) + beta * f.T @ f
        m = beta * np.linalg.solve(a, f.T @ y)
        evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * np.linalg.slogdet(a)[1]
                    - beta / 2 * ((y - f @ m) ** 2).sum() - alpha / 2 * (m @ m) - n / 2 * np.log(2 * np.pi))
        out.append(evidence / n)
    return float(np.mean(out))


def hscore_direct(f: np.ndarray, labels: np.ndarray) -> float:
    """tr(cov(f)^-1 cov(E[f | y])) with the covariances summed example by example."""
    n, d = f.shape
    mu = f.mean(0)
    cov_f = sum(np.outer(x - mu, x - mu) for x in f) / (n - 1)
    class_mean = {c: f[labels == c].mean(0) for c in np.unique(labels)}
    g = np.stack([class_mean[c] for c in labels])
    mu_g = g.mean(0)
    cov_g = sum(np.outer(x - mu_g, x - mu_g) for x in g) / (n - 1)
    return float(np.trace(np.linalg.pinv(cov_f) @ cov_g))


@pytest.mark.parametrize("n,d", [(120, 20), (25, 60)])  # more and fewer examples than features
def test_logme_matches_direct_formula(n, d) -> None:
    rng = np.random.default_rng(n)
    y = rng.integers(0, 4, n)
    f = rng.normal(size=(n, d)) + 0.8 * np.eye(4)[y] @ rng.normal(size=(4, d))
    assert S.logme(f, y) == pytest.approx(logme_direct(f, y), abs=1e-6)


def hscore_shrinkage_direct(f: np.ndarray, labels: np.ndarray) -> float:
    """tr(C_lw^-1 cov(E[f | y])) with sklearn's Ledoit-Wolf covariance inverted as a d x d matrix."""
    from sklearn.covariance import LedoitWolf

    fc = f - f.mean(0)
    cov = LedoitWolf(assume_centered=True).fit(fc).covariance_
    g = np.stack([fc[labels == c].mean(0) for c in labels])
    return float(np.trace(np.linalg.inv(cov) @ np.cov(g, rowvar=False)))


@pytest.mark.parametrize("n,d", [(90, 12), (25, 60)])  # more and fewer examples than features
def test_hscores_match_direct_formulas(n, d) -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, n)
    f = rng.normal(size=(n, d)) + np.eye(3)[y] @ rng.normal(size=(3, d))
    assert S.hscore(f, y) == pytest.approx(hscore_direct(f, y), abs=1e-6)
    assert S.hscore_shrinkage(f, y) == pytest.approx(hscore_shrinkage_direct(f, y), abs=1e-6)
    from sklearn.covariance import ledoit_wolf_shrinkage

    fc = f - f.mean(0)
    lam = np.linalg.svd(fc, compute_uv=False) ** 2  # f'f's non-zero eigenvalues
    assert S._ledoit_wolf_shrinkage(fc, lam) == pytest.approx(ledoit_wolf_shrinkage(fc, assume_centered=True), abs=1e-12)


def test_nce_and_leep_hand_computed() -> None:
    labels = np.array([0, 0, 1, 1])
    perfect = np.eye(2)[labels]  # the source head's class determines the target class
    assert S.nce(perfect, labels) == pytest.approx(0.0)
    assert S.leep(perfect, labels) == pytest.approx(0.0, abs=1e-9)
    useless = np.full((4, 2), 0.5)  # the same source prediction for everything
    assert S.nce(useless, labels) == pytest.approx(np.log(0.5))
    assert S.leep(useless, labels) == pytest.approx(np.log(0.5))


def _separable_and_random(seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), 40)
    good = np.eye(4)[y] @ rng.normal(size=(4, 16)) * 3 + rng.normal(size=(160, 16))
    bad = rng.normal(size=(160, 16))
    src_good = np.eye(6)[y + 1] * 0.9 + 0.1 / 6
    src_bad = rng.dirichlet(np.ones(6), 160)
    return y, good, bad, src_good, src_bad


@pytest.mark.parametrize("name", RANKERS.names())
def test_separable_features_score_higher(name) -> None:
    y, good, bad, src_good, src_bad = _separable_and_random()
    hi = score(name, good, y, src_good)
    lo = score(name, bad, y, src_bad)
    assert hi > lo, (name, hi, lo)


@pytest.mark.parametrize("name", RANKERS.names())
def test_invariant_to_label_renaming(name) -> None:
    y, good, _, src_good, _ = _separable_and_random(1)
    renamed = np.array(["zebra", "apple", "mango", "kiwi"])[y]
    assert score(name, good, renamed, src_good) == pytest.approx(score(name, good, y, src_good), rel=1e-9, abs=1e-12)


def test_degenerate_inputs_are_clear() -> None:
    rng = np.random.default_rng(0)
    f = rng.normal(size=(10, 4))
    with pytest.raises(DataError, match="only one class"):
        score("logme", f, np.zeros(10))
    with pytest.raises(DataError, match="3 examples for 3 classes"):
        score("logme", f[:3], np.array([0, 1, 2]))
    bad = f.copy()
    bad[2, 1] = np.nan
    bad[7, 0] = np.inf
    with pytest.raises(DataError, match=r"2 NaN or infinite value\(s\) in 2 row\(s\), first rows \[2, 7\]"):
        score("hscore", bad, np.arange(10) % 2)
    with pytest.raises(DataError, match="every feature is constant"):
        score("knn", np.ones((10, 4)), np.arange(10) % 2)
    mostly = np.concatenate([f[:, :1], np.ones((10, 3))], 1)
    with pytest.warns(RankWarning, match="3 of 4 features are constant"):
        score("logme", mostly, np.arange(10) % 2)
    with pytest.raises(ConfigError, match="needs the backbone's pre-training head"):
        score("leep", f, np.arange(10) % 2)


def test_rank_backbones_on_real_digits(mnist_small) -> None:
    """ImageNet features must out-rank raw pixels on real digits by LogME; LEEP needs the head."""
    from headstart.workflows.rank import rank_backbones

    data = mnist_small.subset(range(0, 600, 4))  # 150 digits
    result = rank_backbones(data, ["raw-pixels", "efficientnet-lite0"], ("logme", "knn", "leep"), progress=False)
    rows = {r["backbone"]: r for r in result["rows"]}
    assert result["order"][0] == "efficientnet-lite0"
    assert rows["raw-pixels"]["scores"]["leep"] is None and rows["efficientnet-lite0"]["scores"]["leep"] < 0
    assert "Use efficientnet-lite0" in result["recommendation"]


@pytest.mark.slow
def test_rank_cli_and_modality_mismatch(tmp_path) -> None:
    import json
    import subprocess
    import sys

    out = tmp_path / "r.json"
    ok = subprocess.run([sys.executable, "-m", "headstart", "rank", "builtin:digits:10", "--backbones",
                         "raw-pixels,efficientnet-lite0", "--scores", "logme,knn", "--json", str(out)],
                        capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr
    assert "higher is better" in ok.stdout and json.loads(out.read_text())["primary"] == "logme"
    bad = subprocess.run([sys.executable, "-m", "headstart", "rank", "builtin:digits:10", "--backbones", "minilm-l6"],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "takes texts but builtin:digits:10 holds images" in bad.stderr


def test_fit_backbone_auto_records_the_ranking(mnist_small, tmp_path) -> None:
    import headstart
    from headstart.backbones import ZOO

    data = mnist_small.subset(range(0, 600, 10))  # 60 real digits
    model = headstart.fit(data, backbone="auto", out=tmp_path / "auto", progress=False, baseline=False)
    selection = model.info["backbone_selection"]
    assert selection["primary"] == "logme"
    assert set(selection["order"]) == {n for n in ZOO.names() if ZOO.get(n).modality == "image"}
    assert model.backbone.card.name == selection["order"][0] != "raw-pixels"
    assert "## How the backbone was chosen" in (tmp_path / "auto" / "transfer_card.md").read_text()


def test_confirm_ranking_by_successive_halving(bbc_small, tiny_bert_dir) -> None:
    """Real ONNX MiniLM (probe) against a tiny random BERT (fine-tuned): the halving logic, fast."""
    from headstart.workflows.rank import confirm_ranking

    data = bbc_small.subset(range(0, 150, 2))
    tiny = f"hf:{tiny_bert_dir}"
    check = confirm_ranking(data, [tiny, "minilm-l3-onnx"], 2, progress=False)
    assert [r["epochs"] for r in check["rounds"]] == [1, 2]
    first = check["rounds"][0]["accuracy"]
    assert set(first) == {tiny, "minilm-l3-onnx"} and len(check["rounds"][1]["accuracy"]) == 1
    assert first["minilm-l3-onnx"] >= 0.6  # real weights; 5 topics, chance is 0.2
    assert check["confirmed_order"][0] == max(first, key=first.get) == "minilm-l3-onnx"
    assert check["top_choice_held"] is False  # the ranking put the random model first; confirmation says so


def test_knn_estimates_on_a_subset_above_its_cap() -> None:
    """kNN is quadratic in the examples; above the cap it is a subset estimate, close to the full value."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 900)
    f = rng.normal(size=(900, 8)) + 0.5 * np.eye(3)[y] @ rng.normal(size=(3, 8))
    full = S.knn_accuracy(f, y)
    capped = S.knn_accuracy(f, y, max_examples=300)
    assert 0.5 < full < 0.99  # an informative regime, not saturated
    assert capped == pytest.approx(full, abs=0.06)
    assert capped != full  # the cap really took a subset


def test_ranking_scores_a_stratified_subset_of_large_data(mnist_small) -> None:
    from headstart.workflows.rank import rank_backbones

    result = rank_backbones(mnist_small, ["raw-pixels"], ("logme", "knn"), max_examples=200, progress=False)
    assert (result["n"], result["n_total"]) == (200, 600)  # 20 of each of the 10 digits
    whole = rank_backbones(mnist_small, ["raw-pixels"], ("logme",), max_examples=None, progress=False)
    assert whole["n"] == whole["n_total"] == 600
    with pytest.raises(ConfigError, match="max_examples must be at least 1"):
        rank_backbones(mnist_small, ["raw-pixels"], max_examples=0, progress=False)


def test_rank_table_keeps_names_whole_and_prints_no_nan(monkeypatch, capsys) -> None:
    """In an 80-column terminal the three EfficientNets stay distinguishable; a score that ties every
    backbone has no Kendall tau (nan) to print; a tie in --confirm is called a tie."""
    import headstart.workflows.rank as rank_api
    from headstart.cli import _common
    from headstart.cli.main import main

    names = ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "raw-pixels"]
    rows = [{"backbone": n, "scores": {"logme": float(i), "knn": 0.5}, "params": 4e6, "seconds": 1.0}
            for i, n in enumerate(names)]

    def fake_rank(data, backbones, scores, **kwargs):
        from scipy.stats import kendalltau

        tau = kendalltau([r["scores"]["logme"] for r in rows], [r["scores"]["knn"] for r in rows]).statistic
        assert np.isnan(tau)  # the case the CLI must not print
        return {"primary": "logme", "rows": rows, "order": names[::-1], "n": 40, "n_total": 40, "classes": 10,
                "agreement": {}, "recommendation": "Use raw-pixels."}

    def fake_confirm(data, order, k, **kwargs):
        return {"rounds": [{"epochs": 1, "accuracy": {order[0]: 0.9, order[1]: 0.9}}], "confirmed_order": order[:2],
                "predicted_order": order[:2], "top_choice_held": False, "verdict": "tie", "tied": order[:2]}

    monkeypatch.setattr(rank_api, "rank_backbones", fake_rank)
    monkeypatch.setattr(rank_api, "confirm_ranking", fake_confirm)
    monkeypatch.setattr(_common.out, "size", (80, 25))
    with pytest.raises(SystemExit) as done:
        main(["rank", "builtin:digits:4", "--scores", "logme,knn", "--confirm", "2"])
        raise SystemExit(0)
    text = capsys.readouterr().out
    assert done.value.code == 0
    for n in names:
        assert n in text
    assert "nan" not in text.lower() and "a tie" in text and "held" not in text


def test_agreement_skips_a_score_that_ties_every_backbone() -> None:
    from headstart.workflows.rank import score_agreement

    rows = [{"scores": {"logme": float(i), "knn": 0.5, "leep": float(-i)}} for i in range(4)]
    assert score_agreement(rows, ["logme", "knn", "leep"]) == {"logme ~ leep": -1.0}


def test_a_tie_in_an_early_round_is_called_a_tie(bbc_small, monkeypatch) -> None:
    """Two candidates equally accurate in round 1: both would be 'the winner', so neither is
    eliminated by the order they happened to be listed in, and the verdict is a tie."""
    import types

    import headstart.workflows.pipeline as pipeline
    import headstart.workflows.rank as rank_mod

    monkeypatch.setattr(rank_mod, "create_backbone", lambda name, **kw: types.SimpleNamespace(trainable=False))

    def same_accuracy(bb, parts, names, strategy, config, **kw):
        y = np.array([names.index(v) for v in parts.test.labels])
        proba = np.eye(len(names))[np.where(np.arange(len(y)) % 2 == 0, y, (y + 1) % len(names))]
        return None, proba, {"test": y}, {}

    monkeypatch.setattr(pipeline, "train_model", same_accuracy)
    check = rank_mod.confirm_ranking(bbc_small, ["a", "b", "c"], 3, progress=False)
    first = check["rounds"][0]["accuracy"]
    assert first["a"] == first["b"] == first["c"]
    assert check["verdict"] == "tie" and check["top_choice_held"] is False
    assert sorted(check["tied"]) == ["a", "b", "c"]
