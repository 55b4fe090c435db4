"""Label shift: estimating the target's class proportions without its labels, and correcting for them."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import headstart
from headstart.data import Dataset
from headstart.domain.label_shift import (SHIFT_ESTIMATORS, PriorEstimate, class_weights, describe_shift,
                                          estimate_prior, label_shift_significant, resample_indices, reweight)
from headstart.errors import ConfigError, DataError
from headstart.heads import HEADS, LinearHead, PriorAdjusted, TemperatureScaled, build_head

K = 4
MEANS = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0]])


def _sample(proportions, n: int, seed: int):
    """Four Gaussian classes in 2-D, one unit apart per sd (they overlap a little)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(K, size=n, p=proportions)
    return MEANS[y] + rng.normal(size=(n, 2)), y


def _bayes_proba(x: np.ndarray) -> np.ndarray:
    """The exact posterior under equal class proportions: the source classifier, calibrated."""
    logits = -((x[:, None, :] - MEANS[None]) ** 2).sum(2) / 2
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


UNIFORM = np.full(K, 1 / K)
SKEWED = np.array([0.55, 0.25, 0.15, 0.05])


@pytest.fixture(scope="module")
def shifted():
    xs, ys = _sample(UNIFORM, 800, seed=1)
    xt, yt = _sample(SKEWED, 1000, seed=2)
    return _bayes_proba(xs), ys, _bayes_proba(xt), np.bincount(yt, minlength=K) / len(yt)


@pytest.mark.parametrize("method", SHIFT_ESTIMATORS.names())
def test_every_estimator_recovers_skewed_proportions_from_1000_items(shifted, method) -> None:
    ps, ys, pt, truth = shifted
    est = SHIFT_ESTIMATORS.get(method)(ps, ys, pt, bootstrap=50)
    assert isinstance(est, PriorEstimate) and est.ok and est.method == method
    assert est.target.sum() == pytest.approx(1.0) and (est.target >= 0).all()
    assert est.l1(truth) < 0.05, (est.target, truth)
    low, high = est.interval[:, 0], est.interval[:, 1]
    assert (low <= high).all() and (low <= est.target + 1e-9).all() and (est.target <= high + 1e-9).all()
    assert label_shift_significant(est)
    # Weights are q / p against the source proportions; the first class gained, the last lost.
    w = est.weights()
    assert w[0] > 1.5 and w[3] < 0.5


def test_no_shift_reads_as_no_shift(shifted) -> None:
    ps, ys, _, _ = shifted
    xt, _ = _sample(UNIFORM, 1000, seed=3)
    # The classifier was trained under equal proportions; the validation split's own shares differ
    # from them by sampling noise (up to 3 points here), which is why the source prior is passed.
    est = estimate_prior("em", ps, ys, _bayes_proba(xt), source_prior=UNIFORM, bootstrap=50)
    assert est.l1(UNIFORM) < 0.06
    assert not label_shift_significant(est)


def test_em_likelihood_ratio_test_rejects_a_real_shift(shifted) -> None:
    ps, ys, pt, _ = shifted
    assert estimate_prior("em", ps, ys, pt, bootstrap=0).details["p_value_no_shift"] < 1e-6


def test_reweight_is_bayes_rule_with_new_proportions() -> None:
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    out = reweight(p, np.array([3.0, 1.0]))
    # 0.5 * 3 / (0.5 * 3 + 0.5) = 0.75; 0.9 * 3 / (2.7 + 0.1) = 0.964...
    assert out[0, 0] == pytest.approx(0.75) and out[1, 0] == pytest.approx(2.7 / 2.8)
    assert np.allclose(out.sum(1), 1.0)


def test_correction_with_true_weights_raises_accuracy_on_the_skewed_target(shifted) -> None:
    _, _, pt, truth = shifted
    xt, yt = _sample(SKEWED, 1000, seed=2)
    before = (pt.argmax(1) == yt).mean()
    after = (reweight(pt, SKEWED / UNIFORM).argmax(1) == yt).mean()
    assert after > before


def test_correction_calibrates_an_unsure_classifier_before_moving_its_prior(shifted) -> None:
    """A head trained with label smoothing is less sure than it should be; moving its raw
    probabilities by q / p then flips too many predictions. The estimate's correction calibrates
    first, and lands on the Bayes-optimal decisions for the target."""
    ps, ys, pt, _ = shifted
    xt, yt = _sample(SKEWED, 1000, seed=2)

    def unsure(p):
        q = p ** 0.25
        return q / q.sum(1, keepdims=True)

    est = estimate_prior("em", unsure(ps), ys, unsure(pt), bootstrap=0)
    best = reweight(pt, SKEWED / UNIFORM).argmax(1)  # the exact posterior moved to the true proportions
    calibrated = est.correct(unsure(pt)).argmax(1)
    raw = reweight(unsure(pt), est.weights()).argmax(1)
    assert (calibrated == best).mean() > 0.98 and (raw == best).mean() < 0.95
    assert (calibrated == yt).mean() > (unsure(pt).argmax(1) == yt).mean() > (raw == yt).mean()
    t, offsets = est.calibrated_offsets()
    assert t < 0.5 and offsets.shape == (K,)  # sharpened, then moved
    none = estimate_prior("em", unsure(ps), ys, unsure(pt)[:5])  # too few target items: no estimate
    assert not none.ok and none.calibrated_offsets() is None and np.allclose(none.correct(pt), pt)


def test_class_weights_have_mean_one_under_the_source(shifted) -> None:
    ps, ys, pt, _ = shifted
    est = estimate_prior("bbse", ps, ys, pt, bootstrap=0)
    w = class_weights(est)
    assert (w * est.source).sum() == pytest.approx(1.0)
    idx = resample_indices(ys, w, seed=0)
    shares = np.bincount(ys[idx], minlength=K) / len(idx)
    assert np.abs(shares - est.target).sum() < 0.1  # the resampled source has the target's proportions


# -- bad input: a warning that names why, and no correction -----------------------------------------

def test_too_few_target_items_give_no_estimate_and_say_why(shifted) -> None:
    ps, ys, pt, _ = shifted
    est = estimate_prior("em", ps, ys, pt[:7])
    assert not est.ok and est.weights() is None and est.log_offsets() is None and np.isnan(est.l1(UNIFORM))
    assert "the target has 7 item(s); at least 20 are needed for 4 classes" in est.warning
    assert "no prior correction" in est.warning


def test_singular_confusion_matrix_gives_no_bbse_estimate(shifted) -> None:
    ps, ys, pt, _ = shifted
    merged = ps.copy()
    merged[:, 0] += merged[:, 1]  # a classifier that never predicts class 1: C loses rank
    merged[:, 1] = 0.0
    est = estimate_prior("bbse", merged, ys, pt)
    assert not est.ok
    assert "singular" in est.warning and "condition number" in est.warning


def test_singular_confusion_matrix_gives_no_rlls_estimate_either(shifted) -> None:
    """RLLS's regulariser shrinks the weights where the confusion matrix is ill-conditioned, but a
    class that is never predicted cannot be estimated by any amount of it."""
    ps, ys, pt, _ = shifted
    merged = ps.copy()
    merged[:, 0] += merged[:, 1]
    merged[:, 1] = 0.0
    est = estimate_prior("rlls", merged, ys, pt)
    assert not est.ok and est.weights() is None
    assert "singular" in est.warning and "no prior correction" in est.warning


def test_class_missing_from_the_source_validation_split_gives_no_estimate(shifted) -> None:
    ps, ys, pt, _ = shifted
    keep = ys != 2
    est = estimate_prior("em", ps[keep], ys[keep], pt)
    assert not est.ok and "class(es) 2 have fewer than 2 source validation items" in est.warning


def test_malformed_inputs_are_errors_that_name_the_argument(shifted) -> None:
    ps, ys, pt, _ = shifted
    with pytest.raises(DataError, match="`proba_target` has 3 class columns but the source has 4"):
        estimate_prior("em", ps, ys, pt[:, :3])
    with pytest.raises(DataError, match="rows of `proba_source` must sum to 1"):
        estimate_prior("em", ps * 2, ys, pt)
    with pytest.raises(DataError, match="`y_source` must hold one label per source probability row"):
        estimate_prior("em", ps, ys[:-1], pt)
    with pytest.raises(DataError, match="`y_source` must be integers in \\[0, 4\\)"):
        estimate_prior("em", ps, ys + 1, pt)
    with pytest.raises(DataError, match="NaN"):
        estimate_prior("bbse", ps, ys, np.full_like(pt, np.nan))
    with pytest.raises(DataError, match="`source_prior` must be 4 proportions summing to 1"):
        estimate_prior("em", ps, ys, pt, source_prior=[0.5, 0.5])
    with pytest.raises(ConfigError, match="Did you mean"):
        estimate_prior("bbsee", ps, ys, pt)
    with pytest.raises(DataError, match="`weights` must be 4 finite non-negative numbers"):
        reweight(pt, np.array([1.0, -1.0, 1.0, 1.0]))


# -- words ------------------------------------------------------------------------------------------

def test_describe_shift_names_labels_inputs_both_or_neither(shifted) -> None:
    ps, ys, pt, _ = shifted
    moved = estimate_prior("em", ps, ys, pt, bootstrap=50)
    names = ["a", "b", "c", "d"]
    assert describe_shift(moved, False, names).startswith("in the labels")
    assert describe_shift(moved, True, names).startswith("both")
    xt, _ = _sample(UNIFORM, 1000, seed=3)
    still = estimate_prior("em", ps, ys, _bayes_proba(xt), source_prior=UNIFORM, bootstrap=50)
    assert describe_shift(still, True, names).startswith("in the inputs")
    assert describe_shift(still, False, names).startswith("neither")
    none = estimate_prior("em", ps, ys, pt[:5])
    assert "label shift not measured" in describe_shift(none, True, names)
    untrusted = {"trusted": False, "confidence_drop": 0.3, "max_confidence_drop": 0.1, "mixture_l1": 0.2,
                 "max_mixture_l1": 0.5}
    words = describe_shift(moved, True, names, trust=untrusted)
    assert words.startswith("in the inputs") and "cannot be judged" in words
    assert "confidence drops by 0.30" in words and "mixture" not in words.split("not to be trusted")[1].split(".")[0]
    assert describe_shift(moved, False, names, trust={"trusted": True}).startswith("in the labels")


def test_gap_says_when_an_input_shift_leaves_the_proportions_unjudgeable() -> None:
    """Target items pulled towards the middle of the classes: the probe is unsure there, its
    estimate means little, and the report says so instead of naming a label shift."""
    from headstart.domain.gap import label_shift_report

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 2.0, (4, 16))
    ys = rng.integers(0, 4, 240)
    yt = rng.choice(4, 300, p=[0.55, 0.15, 0.15, 0.15])
    xs = (centres[ys] + rng.normal(0, 1.0, (240, 16))).astype(np.float32)
    middle = centres.mean(0)
    xt = (middle + 0.2 * (centres[yt] - middle) + rng.normal(0, 1.0, (300, 16))).astype(np.float32)
    out = label_shift_report(xs, [str(v) for v in ys], xt, bootstrap=0, permutations=0)
    assert out["trust"]["trusted"] is False and out["trust"]["confidence_drop"] > 0.1
    assert out["in_words"].startswith("in the inputs") and "cannot be judged" in out["in_words"]
    # the same source against a pure change of class proportions: trusted, and named as such
    xl = (centres[yt] + rng.normal(0, 1.0, (300, 16))).astype(np.float32)
    fine = label_shift_report(xs, [str(v) for v in ys], xl, bootstrap=0, permutations=0)
    assert fine["trust"]["trusted"] and "cannot be judged" not in fine["in_words"]


# -- the deployable head ----------------------------------------------------------------------------

def test_prior_adjusted_head_reweights_probabilities_and_rebuilds_from_its_spec() -> None:
    torch.manual_seed(0)
    inner = TemperatureScaled(LinearHead(5, 3), 2.0)
    w = np.array([2.0, 1.0, 0.25])
    head = PriorAdjusted(inner, torch.log(torch.as_tensor(w, dtype=torch.float32)))
    x = torch.randn(8, 5)
    with torch.no_grad():
        expected = reweight(inner(x).softmax(1).double().numpy(), w)
        got = head(x).softmax(1).double().numpy()
    assert np.allclose(got, expected, atol=1e-6)
    assert "prior" in HEADS
    rebuilt = build_head(head.spec())
    rebuilt.load_state_dict(head.state_dict())
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), head(x))


# -- end to end: the strategy estimates, corrects, saves, and predict applies it -----------------

def _images(proportions, n: int, seed: int, noise: float = 0.35) -> Dataset:
    """Tiny 8x8 grey images whose brightness pattern depends on the class (with noise): 3 classes."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=proportions)
    base = np.zeros((3, 8, 8))
    base[0, :4] = 1.0
    base[1, :, :4] = 1.0
    base[2, 4:, 4:] = 1.0
    imgs = np.clip((base[y] * 0.6 + 0.2 + rng.normal(scale=noise, size=(n, 8, 8))) * 255, 0, 255).astype(np.uint8)
    return Dataset("image", list(imgs), [str(int(v)) for v in y], [f"img {seed}-{i}" for i in range(n)],
                   source=f"synthetic {seed}")


@pytest.mark.slow
def test_domain_adapt_corrects_the_prior_and_predict_applies_it(tmp_path) -> None:
    source = _images([1 / 3, 1 / 3, 1 / 3], 300, seed=0)
    truth = np.array([0.7, 0.2, 0.1])
    target = _images(truth, 400, seed=1)
    out = tmp_path / "model"
    model = headstart.fit(source, target=target, backbone="raw-pixels", strategy="domain-adapt",
                          options={"method": "source-only", "epochs": 3, "label_shift": "on"},
                          out=out, progress=False, baseline=False)
    details = model.info["strategy"]["details"]
    shift = details["label_shift"]
    assert shift["applied"] and details["chosen"] == "source-only" and details["prior_correction"]
    realised = np.bincount([int(v) for v in target.labels], minlength=3) / len(target)
    assert np.abs(np.array(shift["estimate"]["target"]) - realised).sum() < 0.15
    assert isinstance(model.head, PriorAdjusted)
    summary = details["summary"]
    assert summary["source-only+prior"]["target_accuracy"][0] >= summary["source-only"]["target_accuracy"][0] - 0.02
    loaded = headstart.load(out)
    assert isinstance(loaded.head, PriorAdjusted)
    items = target.items[:16]
    assert np.allclose(loaded.predict_proba(items), model.predict_proba(items), atol=1e-6)
    # The deployed model moves every item's odds towards the grown first class, away from the shrunk last.
    feats = torch.as_tensor(loaded.features(target.subset(range(100)))).float()
    with torch.no_grad():
        plain = loaded.head.inner(feats).log_softmax(1).numpy()
        fixed = loaded.head(feats).log_softmax(1).numpy()
    moved = (fixed[:, 0] - fixed[:, 2]) - (plain[:, 0] - plain[:, 2])
    assert (moved > 0.5).all()


@pytest.mark.slow
def test_label_shift_off_keeps_the_model_as_it_was() -> None:
    source = _images([1 / 3, 1 / 3, 1 / 3], 150, seed=0)
    target = _images([0.7, 0.2, 0.1], 100, seed=1)
    model = headstart.fit(source, target=target, backbone="raw-pixels", strategy="domain-adapt",
                          options={"method": "source-only", "epochs": 2, "label_shift": "off"},
                          progress=False, baseline=False)
    details = model.info["strategy"]["details"]
    assert not details["label_shift"]["applied"] and "source-only+prior" not in details["summary"]
    assert not isinstance(model.head, PriorAdjusted)


@pytest.mark.slow
def test_too_small_a_target_warns_and_changes_nothing() -> None:
    source = _images([1 / 3, 1 / 3, 1 / 3], 150, seed=0)
    target = _images([0.7, 0.2, 0.1], 12, seed=1)
    model = headstart.fit(source, target=target, backbone="raw-pixels", strategy="domain-adapt",
                          options={"method": "source-only", "epochs": 2, "label_shift": "on"},
                          progress=False, baseline=False)
    details = model.info["strategy"]["details"]
    assert not details["label_shift"]["applied"] and not isinstance(model.head, PriorAdjusted)
    assert any("the target has 12 item(s)" in r for r in details["reasons"])


def test_unknown_label_shift_options_are_config_errors() -> None:
    from headstart.methods import make_config

    with pytest.raises(ConfigError, match="label_shift"):
        make_config("domain-adapt", label_shift="sometimes")
    with pytest.raises(ConfigError, match="shift_estimator"):
        make_config("domain-adapt", shift_estimator="kmm")


# -- headstart gap ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_gap_reports_target_proportions_with_intervals_and_names_the_shift(tmp_path) -> None:
    from headstart.workflows.gap import gap

    source = _images([1 / 3, 1 / 3, 1 / 3], 240, seed=0)
    target = _images([0.7, 0.2, 0.1], 200, seed=1)
    target.labels = None  # the estimate must not need them
    report = gap(source, target, backbone="raw-pixels", permutations=50, bootstrap=50, progress=False,
                 out=tmp_path / "gap")
    shift = report["label_shift"]
    assert shift["classes"] == ["0", "1", "2"]
    assert np.abs(np.array(shift["target"]) - [0.7, 0.2, 0.1]).sum() < 0.15
    low, high = np.array(shift["interval"]).T
    assert (low <= np.array(shift["target"]) + 1e-9).all() and (np.array(shift["target"]) <= high + 1e-9).all()
    assert shift["in_words"].startswith("in the labels"), shift["in_words"]
    assert shift["trust"]["trusted"]
    md = (tmp_path / "gap" / "gap.md").read_text()
    assert "## Class proportions" in md and "| class | source | target (estimated) | interval |" in md
    assert re.search(r"- Estimate trusted: the classifier's mean confidence "
                     r"(drops by \d\.\d\d|rises by \d\.\d\d|stays the same \(within 0\.01\)) on the target", md)
    assert f"| 0 | {100 * shift['source_proportions'][0]:.1f}% | {100 * shift['target'][0]:.1f}% |" in md

    flipped = Dataset("image", [255 - im for im in target.items], None, list(target.ids), source="flipped")
    both = gap(source, flipped, backbone="raw-pixels", permutations=50, bootstrap=20, progress=False)
    assert both["label_shift"]["input_shift"] is True
    assert both["label_shift"]["in_words"].startswith(("both", "in the inputs"))


def test_gap_estimates_from_source_items_its_probe_never_trained_on(monkeypatch) -> None:
    """A probe scoring items it was trained on looks more certain than it is on the target, and the
    calibration then skews the estimate: the held-out items must stay out of the probe's training."""
    import headstart.train.linear_probe as lp
    from headstart.domain.gap import label_shift_report

    real = lp.linear_probe
    seen: list[tuple[int, int, bool]] = []

    def spy(train_x, train_y, val_x, val_y, k, config=lp.LinearProbeConfig(), **kw):
        seen.append((len(train_x), len(val_x), config.refit_on_val))
        return real(train_x, train_y, val_x, val_y, k, config, **kw)

    monkeypatch.setattr(lp, "linear_probe", spy)
    xs, ys = _sample(UNIFORM, 200, seed=1)
    xt, _ = _sample(SKEWED, 300, seed=2)
    out = label_shift_report(xs.astype(np.float32), [str(v) for v in ys], xt.astype(np.float32), bootstrap=0,
                             permutations=0)
    assert out["target"] is not None and len(seen) == 1
    n_train, n_held, refit = seen[0]
    assert n_train + n_held == 200 and n_held == out["n_source"] and not refit


@pytest.mark.slow
def test_gap_cli_prints_proportions_and_rejects_an_unknown_estimator(tmp_path) -> None:
    from click.testing import CliRunner
    from PIL import Image

    from headstart.cli.main import cli

    data = {"src": _images([1 / 3, 1 / 3, 1 / 3], 90, seed=0), "tgt": _images([0.7, 0.2, 0.1], 60, seed=1)}
    for name, ds in data.items():
        for i, (im, label) in enumerate(zip(ds.items, ds.labels)):
            folder = tmp_path / name / (label if name == "src" else "")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(im).save(folder / f"{i}.png")
    result = CliRunner().invoke(cli, ["gap", str(tmp_path / "src"), str(tmp_path / "tgt"), "--backbone", "raw-pixels",
                                      "--permutations", "20", "--bootstrap", "20"])
    assert result.exit_code == 0, result.output
    import re

    assert "Class proportions" in result.output
    assert re.search(r"0: source \d+% -> target \d+% \[\d+-\d+%\]", result.output), result.output
    assert "Shift" in result.output
    bad = CliRunner().invoke(cli, ["gap", str(tmp_path / "src"), str(tmp_path / "tgt"), "--estimator", "kmm"])
    assert bad.exit_code != 0 and "kmm" in bad.output


@pytest.mark.slow
def test_the_saved_prior_correction_is_the_one_scored_and_the_source_test_split_is_scored_without_it(
        tmp_path, monkeypatch) -> None:
    """The prior correction is calibrated by EM (its temperature and biases): the saved head holds
    exactly that temperature, no second one fitted on the source's proportions, and the source's
    test split is scored by the head before the correction."""
    import headstart.workflows.pipeline as pipeline
    from headstart.data import split
    from headstart.evaluation.metrics import classification_metrics

    calls = []
    monkeypatch.setattr(pipeline, "fit_temperature", lambda proba, y: calls.append(1) or {
        "temperature": 2.0, "kept": True, "val_nll_before": 1.0, "val_nll_after": 0.9, "method": "stub"})
    source = _images([1 / 3, 1 / 3, 1 / 3], 300, seed=0, noise=1.2)
    target = _images(np.array([0.7, 0.2, 0.1]), 400, seed=1, noise=1.2)
    out = tmp_path / "model"
    model = headstart.fit(source, target=target, backbone="raw-pixels", strategy="domain-adapt",
                          options={"method": "source-only", "epochs": 3, "label_shift": "on"},
                          out=out, progress=False, baseline=False)
    details = model.info["strategy"]["details"]
    est = details["label_shift"]["estimate"]
    assert details["label_shift"]["applied"] and not calls
    loaded = headstart.load(out)
    head = loaded.head
    assert isinstance(head, PriorAdjusted) and isinstance(head.inner, TemperatureScaled)
    assert not isinstance(head.inner.inner, TemperatureScaled)
    assert float(head.inner.temperature) == pytest.approx(est["temperature"], rel=1e-5)
    # What the saved model computes on target items is the calibrated correction z / T + b + log(q / p).
    feats = torch.as_tensor(loaded.features(target.subset(range(50)))).float()
    with torch.no_grad():
        z = head.inner.inner(feats).log_softmax(1).double().numpy()
    want = z / est["temperature"] + np.array(est["bias"]) + np.log(np.array(est["target"]) / np.array(est["implied_source"]))
    want = np.exp(want - want.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    np.testing.assert_allclose(loaded.predict_proba(target.items[:50]), want, atol=1e-4)
    # The test split (the source's) is scored without the move to the target's proportions.
    assert details["test_scored_without_prior_correction"]
    test = split(source, seed=0).test
    with torch.no_grad():
        plain = head.inner(torch.as_tensor(loaded.features(test)).float()).softmax(1).double().numpy()
        moved = head(torch.as_tensor(loaded.features(test)).float()).softmax(1).double().numpy()
    y = np.array([loaded.label_names.index(v) for v in test.labels])
    assert np.abs(plain - moved).max() > 0.05  # otherwise this test could not tell the two heads apart
    scored = model.info["metrics"]["test"]
    assert scored["ece"] == pytest.approx(classification_metrics(y, plain, loaded.label_names)["ece"], abs=1e-6)
    assert scored["ece"] != pytest.approx(classification_metrics(y, moved, loaded.label_names)["ece"], abs=1e-4)


def test_label_shift_on_warns_on_an_untrusted_estimate_and_refuses_a_degenerate_one() -> None:
    from headstart.methods.domain_adapt import AdaptConfig, _decide_prior

    distrust = {"trusted": False, "confidence_drop": 0.30, "max_confidence_drop": 0.1, "mixture_l1": 0.9,
                "max_mixture_l1": 0.5}
    on = AdaptConfig(label_shift="on")

    def estimate(q) -> PriorEstimate:
        return PriorEstimate("em", np.full(3, 1 / 3), np.array(q), n_target=200, n_source=100)

    applied, why = _decide_prior(estimate([0.6, 0.3, 0.1]), "mmd", {}, on, labelled=False, trust=distrust)
    assert applied and why.startswith("WARNING") and "0.30" in why and "L1 0.90" in why
    applied, why = _decide_prior(estimate([0.0, 1.0, 0.0]), "mmd", {}, on, labelled=False, trust=distrust)
    assert not applied and "100% of the target in one class" in why
    # A trusted estimate of a one-class target is applied: the refusal is for what cannot be trusted.
    applied, why = _decide_prior(estimate([0.0, 1.0, 0.0]), "mmd", {}, on, labelled=False, trust={"trusted": True})
    assert applied and not why.startswith("WARNING")
    # auto stands aside on the untrusted estimate, as before.
    applied, _ = _decide_prior(estimate([0.6, 0.3, 0.1]), "mmd", {}, AdaptConfig(label_shift="auto"), labelled=False,
                               trust=distrust)
    assert not applied
