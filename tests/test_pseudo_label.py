"""Pseudo-labels from unlabelled items: the strategy, its guard, auto's candidate, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import headstart
from headstart.data import Dataset
from headstart.errors import ConfigError, DataError
from headstart.methods.base import StrategyInputs
from headstart.methods.pseudo_label import PseudoLabelConfig, choose_strength_by_folds, run_pseudo_label
from headstart.runtime import Runtime


def _blobs(seed: int, n: int, centres: np.ndarray, spread: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(centres)
    return (centres[y] + spread * rng.standard_normal((n, centres.shape[1]))).astype(np.float32), y


def _inputs(train: tuple, val: tuple, pool: np.ndarray) -> StrategyInputs:
    return StrategyInputs(splits=None, features={"train": train[0], "val": val[0], "pool": pool},
                          labels={"train": train[1], "val": val[1]}, num_classes=int(train[1].max()) + 1,
                          runtime=Runtime(device=torch.device("cpu"), progress=False), seed=0)


CENTRES = np.eye(3, 16, dtype=np.float32) * 3.0


def test_a_log_loss_choice_of_C_does_not_take_the_flat_end_of_the_grid_on_a_tie() -> None:
    """Separable blobs: every C scores 100% on held-out folds, so accuracy would tie and pick the
    strongest regularisation; held-out log-loss prefers a C whose probabilities are not flat."""
    x, y = _blobs(0, 30, CENTRES, 0.3)
    C, losses = choose_strength_by_folds(x, y, 3)
    assert C > min(losses) and losses[C] == min(losses.values())


def test_the_pool_is_used_and_the_head_is_a_plain_module() -> None:
    train, val, pool = _blobs(1, 9, CENTRES, 1.2), _blobs(2, 30, CENTRES, 1.2), _blobs(3, 300, CENTRES, 1.2)[0]
    head, info, trained = run_pseudo_label(None, _inputs(train, val, pool), PseudoLabelConfig())
    assert trained is False and info["pool_size"] == 300
    assert [r["share"] for r in info["rounds"]] == list(PseudoLabelConfig().curriculum)
    assert info["rounds"][-1]["pseudo_labelled"] > 250  # the whole pool by the last round
    test = _blobs(4, 300, CENTRES, 1.2)
    with torch.no_grad():
        pred = head(torch.as_tensor(test[0])).argmax(1).numpy()
    assert (pred == test[1]).mean() > 0.8  # blobs 3 apart at spread 1.2: a working probe, not chance (1/3)


def test_pseudo_labels_that_hurt_on_validation_are_dropped(monkeypatch) -> None:
    """The guard: a self-trained probe that scores below the plain probe on validation is not kept."""
    from headstart.methods import pseudo_label

    real = pseudo_label.curriculum_self_train

    def wrong_way_round(zs, ys, zt, k, C, curriculum=()):
        fit = real(zs, ys, zt, k, C, curriculum=curriculum)
        if len(zt):  # the self-trained one (the plain probe is fitted with an empty pool): reverse its classes
            fit.weight, fit.bias = fit.weight[::-1].copy(), fit.bias[::-1].copy()
        return fit

    monkeypatch.setattr(pseudo_label, "curriculum_self_train", wrong_way_round)
    train, val, pool = _blobs(1, 30, CENTRES, 0.5), _blobs(2, 30, CENTRES, 0.5), _blobs(3, 100, CENTRES, 0.5)[0]
    head, info, _ = run_pseudo_label(None, _inputs(train, val, pool), PseudoLabelConfig())
    assert info["used_pool"] is False and "did not beat both" in info["reasons"][0]
    # what is kept is the plain linear probe: nothing of the pool, not even its statistics
    from headstart.methods.linear_probe import LinearProbeConfig, run_linear_probe

    probe, _, _ = run_linear_probe(None, _inputs(train, val, pool[:0]), LinearProbeConfig())
    x = torch.as_tensor(_blobs(4, 50, CENTRES, 0.5)[0])
    with torch.no_grad():
        assert torch.allclose(head(x), probe(x), atol=1e-5)


def test_bad_input_names_the_way_out(tiny_bert_dir) -> None:
    from headstart.data import load_data

    news = load_data("builtin:bbc-news:6")
    pool = Dataset("text", ["an unlabelled article"] * 5, None, [f"u{i}" for i in range(5)], source="pool")
    kw = {"backbone": f"hf:{tiny_bert_dir}", "progress": False, "baseline": False}
    with pytest.raises(ConfigError, match="needs some") as err:
        headstart.fit(news, strategy="pseudo-label", **kw)
    assert "--unlabelled" in str(err.value)
    with pytest.raises(ConfigError, match="does not use it") as err:
        headstart.fit(news, strategy="linear-probe", unlabelled=pool, **kw)
    assert "pseudo-label" in str(err.value) and "auto" in str(err.value)
    images = Dataset("image", [np.zeros((8, 8), np.uint8)] * 3, None, ["a", "b", "c"], source="pics")
    with pytest.raises(DataError, match="holds images"):
        headstart.fit(news, strategy="pseudo-label", unlabelled=images, **kw)
    empty = Dataset("text", [], None, [], source="empty.csv")
    with pytest.raises(DataError, match="empty.csv is empty"):
        headstart.fit(news, strategy="pseudo-label", unlabelled=empty, **kw)
    itself = Dataset("text", list(news.items), None, [f"u{i}" for i in range(len(news))], source="same.csv")
    with pytest.raises(DataError, match=f"Every one of the {len(news)} items of the unlabelled data same.csv is "
                                        "also a labelled item"):
        headstart.fit(news, strategy="pseudo-label", unlabelled=itself, **kw)


def test_pseudo_labels_must_also_beat_the_default_probe(monkeypatch) -> None:
    """Equal to the same probe without the pool is not enough when both fall short of the default
    linear probe (its own C): "kept" must mean better than --strategy linear-probe."""
    from headstart.methods import pseudo_label

    real = pseudo_label.curriculum_self_train

    def both_wrong(zs, ys, zt, k, C, curriculum=()):
        fit = real(zs, ys, zt, k, C, curriculum=curriculum)
        fit.weight, fit.bias = fit.weight[::-1].copy(), fit.bias[::-1].copy()
        return fit

    monkeypatch.setattr(pseudo_label, "curriculum_self_train", both_wrong)
    train, val, pool = _blobs(1, 30, CENTRES, 0.5), _blobs(2, 30, CENTRES, 0.5), _blobs(3, 100, CENTRES, 0.5)[0]
    head, info, _ = run_pseudo_label(None, _inputs(train, val, pool), PseudoLabelConfig())
    assert info["val_accuracy_without_pool"] < info["val_accuracy_linear_probe"]
    assert info["used_pool"] is False and "for the default linear probe" in info["reasons"][0]


@pytest.mark.slow
def test_auto_tries_pseudo_labels_with_a_pool_on_real_articles(minilm, bbc_small) -> None:
    """40 labelled BBC articles and 300 unlabelled: auto scores pseudo-label beside the probe on folds
    (the validation split is tiny) and keeps the best; pseudo-labels beat the probe on held-out
    articles here (measured: bench/results/auto, the smoke run in docs/concepts/strategies.md)."""
    from headstart.data import load_data

    everything = load_data("builtin:bbc-news")
    rng = np.random.default_rng(0)
    labels = np.asarray(everything.labels)
    labelled = sorted(i for c in everything.label_names for i in rng.permutation(np.flatnonzero(labels == c))[:8])
    rest = np.setdiff1d(np.arange(len(everything)), labelled)
    rng.shuffle(rest)
    pool = everything.subset(rest[:300])
    pool.labels = None
    held_out = everything.subset(rest[300:600])
    kw = {"backbone": "minilm-l6", "max_length": 128, "progress": False, "baseline": False}
    probe = headstart.fit(everything.subset(labelled), strategy="linear-probe", **kw)
    auto = headstart.fit(everything.subset(labelled), strategy="auto", unlabelled=pool,
                         options={"candidates": "linear-probe,prototypes,pseudo-label"}, **kw)
    details = auto.info["strategy"]["details"]
    scored = {r["strategy"]: r["cv_accuracy"] for r in details["search"] if "cv_accuracy" in r}
    assert set(scored) == {"linear-probe", "prototypes", "pseudo-label"}
    assert scored[details["chosen_strategy"]] == max(scored.values())

    def accuracy(model):
        return float((np.asarray(model.predict(held_out, progress=False)) == np.asarray(held_out.labels)).mean())

    assert auto.info["data"]["unlabelled"]["n"] == 300
    assert accuracy(auto) >= accuracy(probe) - 0.01


def test_unlabelled_items_that_are_also_labelled_are_left_out_and_said(tiny_bert_dir, tmp_path) -> None:
    """A user who passes 'all my data' as the pool must not train on the test items through their
    pseudo-labels: items also in the labelled data leave the pool, with a warning; the card counts
    what is left. On 30 labelled items the label screen stands aside and says why."""
    from headstart.data import load_data

    news = load_data("builtin:bbc-news:6")
    fresh = load_data("builtin:bbc-news:12").subset(range(0, 60, 2))
    fresh_items = [t for t in fresh.items if t not in set(news.items)][:10]
    items = list(news.items) + fresh_items
    pool = Dataset("text", items, None, [f"p{i}" for i in range(len(items))], source="everything.csv")
    said: list[str] = []
    model = headstart.fit(news, backbone=f"hf:{tiny_bert_dir}", strategy="pseudo-label", unlabelled=pool,
                          progress=False, baseline=False, log=said.append, out=tmp_path / "run")
    warning = [m for m in said if "also in the labelled data" in m]
    assert len(warning) == 1 and f"{len(news)} of the {len(items)} unlabelled items" in warning[0]
    assert "in test" in warning[0] and "--unlabelled" in warning[0]
    assert model.info["data"]["unlabelled"]["n"] == len(fresh_items)
    assert model.info["strategy"]["details"]["pool_size"] == len(fresh_items)
    assert f"({len(fresh_items)} items" in (tmp_path / "run" / "transfer_card.md").read_text()
    assert any(m.startswith("Label screen: skipped") and "needs 60" in m for m in said)
