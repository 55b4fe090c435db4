"""``headstart gap``: what the verdict, the per-class table and the class proportions say when the
data give them little to go on (new classes, tiny samples, classes the probe cannot tell apart),
and the limits on --permutations and --bootstrap."""

from __future__ import annotations

import re

import numpy as np
import pytest

from headstart.data import Dataset
from headstart.domain.gap import label_shift_report, measure_gap, mmd_test, unseen_classes, verdict
from headstart.domain.label_shift import SHIFT_ESTIMATORS, estimate_prior, inseparable_pairs
from headstart.errors import ConfigError, DataError

CENTRES = np.random.default_rng(0).normal(0, 3.0, (4, 8))


def _blobs(counts: dict[int, int], seed: int) -> tuple[np.ndarray, list[str]]:
    """Four well-separated Gaussian classes in 8-D, named '0'..'3', with the given item counts."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(n, c) for c, n in counts.items()])
    return (CENTRES[y] + rng.normal(0, 1.0, (len(y), 8))).astype(np.float32), [str(int(v)) for v in y]


def _images(n: int, seed: int, classes: int = 3) -> Dataset:
    """Tiny 8x8 grey images whose bright quarter depends on the class (with noise)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    base = np.zeros((4, 8, 8))
    base[0, :4, :4] = base[1, :4, 4:] = base[2, 4:, :4] = base[3, 4:, 4:] = 1.0
    imgs = np.clip((base[y] * 0.6 + 0.2 + rng.normal(scale=0.2, size=(n, 8, 8))) * 255, 0, 255).astype(np.uint8)
    return Dataset("image", list(imgs), [str(int(v)) for v in y], [f"img {seed}-{i}" for i in range(n)],
                   source=f"synthetic {seed}")


# -- classes of the target that the source lacks ------------------------------------------------------

def test_a_target_class_the_source_lacks_is_named_with_its_share_and_the_verdict_does_not_say_deploy() -> None:
    xs, ys = _blobs({0: 60, 1: 60, 2: 60}, seed=1)
    xt, yt = _blobs({0: 20, 1: 20, 2: 20, 3: 40}, seed=2)
    yt = [("new" if v == "3" else v) for v in yt]
    out = measure_gap(xs, xt, ys=ys, yt=yt, permutations=19)
    unseen = out["unseen_classes"]
    assert unseen["classes"] == ["new"] and unseen["target_items"] == {"new": 40}
    assert unseen["target_share"] == pytest.approx(0.4)
    assert "new (40 items), 40% of the target" in unseen["warning"]
    assert "new" in out["verdict"] and "deploy" not in out["verdict"] and "no measurable gap" not in out["verdict"]
    left_out = out["per_class_left_out"]
    assert {"class": "new", "source_items": 0, "target_items": 40, "why": "not in the source"} in left_out
    assert {r["class"] for r in out["per_class"]} == {"0", "1", "2"}

    shift = label_shift_report(xs, ys, xt, bootstrap=0, permutations=0, yt=yt)
    assert shift["unseen_classes"]["classes"] == ["new"]
    words = shift["in_words"]
    assert not words.startswith("in the labels") and "new (40 items)" in words
    assert "no prior correction is advised" in words and "should recover" not in words


def test_unseen_classes_is_none_when_the_target_holds_only_known_classes() -> None:
    assert unseen_classes(["a", "b"], ["b", "b", "a"]) is None


def test_gap_md_and_cli_carry_the_new_class_warning(tmp_path) -> None:
    from click.testing import CliRunner
    from PIL import Image

    from headstart.cli.main import cli

    for name, ds in {"src": _images(60, seed=0, classes=3), "tgt": _images(40, seed=1, classes=4)}.items():
        for i, (im, label) in enumerate(zip(ds.items, ds.labels)):
            folder = tmp_path / name / label
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(im).save(folder / f"{i}.png")
    from headstart.workflows.gap import render

    result = CliRunner().invoke(cli, ["gap", str(tmp_path / "src"), str(tmp_path / "tgt"), "--backbone", "raw-pixels",
                                      "--permutations", "19", "--bootstrap", "0"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Warning: the target holds class(es) the source lacks: 3 (10 items), 25% of the target" in text
    assert "left out (a class needs 2 items a side): 3 (not in the source: 0 source, 10 target)" in text
    assert "no intervals, --bootstrap 0" in text and "deploy" not in text

    # The same report as gap.md, from the workflow's result.
    from headstart.workflows.gap import gap

    src = _images(60, seed=0, classes=3)
    tgt = _images(40, seed=1, classes=4)
    report = gap(src, tgt, backbone="raw-pixels", permutations=19, bootstrap=0, progress=False)
    md = render(report)
    assert "**Warning**: the target holds class(es) the source lacks: 3 (10 items), 25% of the target." in md
    assert "Left out of the per-class table" in md and "3 (not in the source: 0 source, 10 target)" in md


# -- --permutations and --bootstrap ----------------------------------------------------------------

@pytest.mark.parametrize("flags, words", [(["--permutations", "-3"], "x>=19"), (["--permutations", "0"], "x>=19"),
                                          (["--permutations", "18"], "x>=19"),
                                          (["--bootstrap", "5"], "use 0 (no intervals) or at least 10"),
                                          (["--bootstrap", "-1"], "x>=0")])
def test_cli_rejects_permutations_and_bootstraps_that_cannot_give_a_p_value_or_an_interval(flags, words) -> None:
    from click.testing import CliRunner

    from headstart.cli.main import cli

    result = CliRunner().invoke(cli, ["gap", "a", "b", *flags])
    assert result.exit_code == 2 and words in " ".join(result.output.split()), result.output


def test_cli_help_says_why_permutations_has_a_minimum() -> None:
    from click.testing import CliRunner

    from headstart.cli.main import cli

    text = " ".join(CliRunner().invoke(cli, ["gap", "--help"]).output.split())
    assert "at least 19: its p-value is at least 1 / (permutations + 1)" in text
    assert "0 = none, else at least 10" in text


@pytest.mark.parametrize("kwargs, words", [({"permutations": 0}, "`permutations` must be at least 19, got 0"),
                                           ({"permutations": -3}, "`permutations` must be at least 19, got -3"),
                                           ({"bootstrap": 5}, "`bootstrap` must be 0 (no intervals) or at least 10")])
def test_the_workflow_rejects_the_same_before_extracting_features(kwargs, words, monkeypatch) -> None:
    import headstart.workflows.gap as wg

    monkeypatch.setattr(wg, "extract_features_many", lambda *a, **k: pytest.fail("features extracted"))
    with pytest.raises(ConfigError) as err:
        wg.gap(_images(20, 0), _images(20, 1), backbone="raw-pixels", progress=False, **kwargs)
    assert words in str(err.value) and "--" in str(err.value)  # the fix names the flag


def test_mmd_test_without_permutations_gives_the_statistic_and_no_p_value() -> None:
    xs, _ = _blobs({0: 30, 1: 30}, seed=1)
    xt, _ = _blobs({2: 30, 3: 30}, seed=2)
    alone = mmd_test(xs, xt, permutations=0)
    tested = mmd_test(xs, xt, permutations=19)
    assert alone["p_value"] is None and alone["mmd2"] == pytest.approx(tested["mmd2"]) and alone["mmd2"] > 0
    assert tested["p_value"] == pytest.approx(1 / 20)  # every permutation falls below a shift this large
    with pytest.raises(ConfigError, match="`permutations` must be >= 0"):
        mmd_test(xs, xt, permutations=-1)


def test_estimate_prior_rejects_too_few_bootstrap_resamples() -> None:
    xs, ys = _blobs({0: 40, 1: 40}, seed=1)
    p = np.full((80, 2), 0.5)
    y = np.array([int(v) for v in ys])
    with pytest.raises(ConfigError, match="at least 10"):
        estimate_prior("bbse", p, y, p, bootstrap=5)


def test_gap_md_says_no_intervals_instead_of_a_column_of_n_a() -> None:
    from headstart.workflows.gap import render

    base = {"source": "s", "target": "t", "backbone": "b", "n_source": 100, "n_target": 100, "verdict": "v",
            "mmd": {"mmd2": 0.01, "p_value": 0.2}, "proxy_a_distance": {"pad": 0.1, "domain_classifier_accuracy": 0.5}}
    shift = {"estimator": "em", "classes": ["a", "b"], "source_proportions": [0.5, 0.5], "target": [0.7, 0.3],
             "interval": None, "level": 0.95, "in_words": "w"}
    md = render({**base, "label_shift": {**shift, "bootstrap": 0}})
    assert "no intervals (--bootstrap 0)" in md and "95%" not in md and "n/a" not in md
    assert "| a | 50.0% | 70.0% |" in md
    note = "only 3 of 20 resamples gave an estimate (the others lost a class), so no interval"
    md = render({**base, "label_shift": {**shift, "bootstrap": 20, "interval_note": note}})
    assert note in md and "95%" not in md and "n/a" not in md
    md = render({**base, "label_shift": {**shift, "bootstrap": 20, "bootstrap_draws": 20,
                                         "interval": [[0.6, 0.8], [0.2, 0.4]]}})
    assert "95% bootstrap intervals (20 resamples)" in md and "| a | 50.0% | 70.0% | 60.0-80.0% |" in md


# -- class names -------------------------------------------------------------------------------------

def test_warnings_name_classes_not_their_indices() -> None:
    xs, ys = _blobs({0: 60, 1: 1, 2: 60, 3: 60}, seed=1)
    names = {"0": "business", "1": "entertainment", "2": "politics", "3": "sport"}
    ys = [names[v] for v in ys]
    xt, yt = _blobs({0: 30, 1: 5, 2: 30, 3: 30}, seed=2)
    yt = [names[v] for v in yt]
    shift = label_shift_report(xs, ys, xt, bootstrap=0, permutations=0)
    assert "class(es) entertainment have fewer than 2 source validation items" in shift["warning"]
    out = measure_gap(xs, xt, ys=ys, yt=yt, permutations=19)
    assert {"class": "entertainment", "source_items": 1, "target_items": 5,
            "why": "fewer than 2 items on a side"} in out["per_class_left_out"]
    assert out["unseen_classes"] is None


def test_estimate_prior_class_names_must_match_the_columns() -> None:
    p = np.full((40, 2), 0.5)
    with pytest.raises(DataError, match="`class_names` has 3 names for 2 probability columns"):
        estimate_prior("em", p, np.arange(40) % 2, p, class_names=["a", "b", "c"])


# -- classes the probe cannot tell apart -----------------------------------------------------------

def _split_class(seed: int, n_per_class: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact posteriors of four well-separated classes in 2-D, with class 1 split at random into
    labels 1 and 4: no classifier can tell 1 from 4. Source (probabilities, labels), target
    (probabilities, labels) with a skew."""
    means = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [6.0, 6.0]])
    rng = np.random.default_rng(seed)

    def draw(p: list[float], n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.choice(4, n, p=p)
        x = means[y] + rng.normal(size=(n, 2))
        logits = -((x[:, None] - means[None]) ** 2).sum(2) / 2
        e = np.exp(logits - logits.max(1, keepdims=True))
        post = e / e.sum(1, keepdims=True)
        # Split class 1's probability between labels 1 and 4 by a coin of each item's own (a classifier
        # guessing), and relabel half of class 1's items, at random, as 4.
        u = rng.uniform(0.3, 0.7, n)
        proba = np.concatenate([post, (post[:, 1] * (1 - u))[:, None]], 1)
        proba[:, 1] *= u
        labels = np.where((y == 1) & (rng.random(n) < 0.5), 4, y)
        return proba, labels

    ps, ys = draw([0.25] * 4, 4 * n_per_class)
    pt, yt = draw([0.5, 0.2, 0.2, 0.1], 600)
    return ps, ys, pt, yt


@pytest.mark.parametrize("method", SHIFT_ESTIMATORS.names())
def test_classes_the_classifier_cannot_tell_apart_get_no_estimate_and_are_named(method) -> None:
    ps, ys, pt, _ = _split_class(seed=0)
    names = ["zero", "one-a", "two", "three", "one-b"]
    est = estimate_prior(method, ps, ys, pt, bootstrap=0, class_names=names)
    assert not est.ok and est.weights() is None
    assert "does not tell these classes apart" in est.warning and "one-a and one-b" in est.warning
    assert est.details["inseparable"][0]["classes"] == ["one-a", "one-b"]


def test_separable_classes_keep_their_estimate_even_from_few_items() -> None:
    ps, ys, pt, yt = _split_class(seed=0)
    merged = lambda p: np.concatenate([p[:, :1], p[:, 1:2] + p[:, 4:5], p[:, 2:4]], 1)  # noqa: E731
    ys4, yt4 = np.where(ys == 4, 1, ys), np.where(yt == 4, 1, yt)
    assert inseparable_pairs(merged(ps), ys4, 4) == []
    est = estimate_prior("bbse", merged(ps), ys4, merged(pt), bootstrap=0)
    assert est.ok and est.l1(np.bincount(yt4, minlength=4) / len(yt4)) < 0.1
    # three items a class, ranked apart perfectly: too few for a test, but no sign of confusion either
    few = np.eye(3)[np.repeat(np.arange(3), 3)] * 0.9 + 0.1 / 3
    assert inseparable_pairs(few, np.repeat(np.arange(3), 3), 3) == []


def test_rlls_gives_bbses_answer_at_its_regulariser_scale() -> None:
    """Documented: RLLS's penalty does not bind on the confusion matrices the other checks let through."""
    ps, ys, pt, _ = _split_class(seed=1)
    merged = lambda p: np.concatenate([p[:, :1], p[:, 1:2] + p[:, 4:5], p[:, 2:4]], 1)  # noqa: E731
    ys4 = np.where(ys == 4, 1, ys)
    bbse = estimate_prior("bbse", merged(ps), ys4, merged(pt), bootstrap=0)
    rlls = estimate_prior("rlls", merged(ps), ys4, merged(pt), bootstrap=0)
    assert np.abs(bbse.target - rlls.target).sum() < 0.005


# -- too few items for a verdict -----------------------------------------------------------------------

def test_a_tiny_target_gets_no_verdict_of_no_gap() -> None:
    xs, ys = _blobs({0: 40, 1: 40}, seed=1)
    xt, _ = _blobs({0: 3}, seed=2)
    out = measure_gap(xs, xt, permutations=19)
    assert "no measurable gap" not in out["verdict"] and "deploy" not in out["verdict"]
    assert re.search(r"cannot be judged on 3 target items.*at least 20 items a side", out["verdict"]), out["verdict"]
    assert "cannot be judged on 5 source and 3 target" in verdict(0.0, 0.5, n_source=5, n_target=3)
    assert verdict(0.0, 0.5, n_source=20, n_target=20).startswith("no measurable gap")


# -- labels or inputs: the re-weighted source has no repeated items ------------------------------------

def _high_dim(counts: dict[int, int], seed: int, dim: int = 200) -> tuple[np.ndarray, list[str]]:
    """Four classes in many dimensions with few items each: a domain classifier can recognise an
    item it has seen, as on a backbone's features of a small data set."""
    centres = np.random.default_rng(7).normal(0, 1.0, (4, dim))
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(n, c) for c, n in counts.items()])
    return (centres[y] + rng.normal(0, 1.0, (len(y), dim))).astype(np.float32), [str(int(v)) for v in y]


def test_subsample_to_shares_draws_without_repeats_at_the_given_shares() -> None:
    from headstart.domain.label_shift import subsample_to_shares

    labels = np.repeat(np.arange(3), [50, 50, 20])
    idx = subsample_to_shares(labels, np.array([0.5, 0.3, 0.2]), seed=0)
    assert len(np.unique(idx)) == len(idx)  # no item twice
    # The rarest class relative to its share limits n: 20 items at 20% -> n = 100, so 50 / 30 / 20.
    assert np.bincount(labels[idx], minlength=3).tolist() == [50, 30, 20]
    only_one = subsample_to_shares(labels, np.array([0.0, 1.0, 0.0]))
    assert np.bincount(labels[only_one], minlength=3).tolist() == [0, 50, 0]
    with pytest.raises(DataError, match="shares"):
        subsample_to_shares(labels, np.array([0.0, 0.0, 0.0]))


def test_a_pure_label_shift_reads_as_in_the_labels_not_both() -> None:
    # Same class-conditional features on both sides, only the proportions move. Resampled with
    # replacement, the source repeated items the domain classifier recognised: "both".
    xs, ys = _high_dim({0: 40, 1: 40, 2: 40, 3: 40}, seed=1)
    xt, _ = _high_dim({0: 70, 1: 10, 2: 10, 3: 10}, seed=2)
    shift = label_shift_report(xs, ys, xt, estimator="bbse", bootstrap=0, permutations=19)
    assert shift["target"][0] > 0.5
    after = shift["after_reweighting"]
    assert after["pad"] < 0.5 and shift["input_shift"] is False, after
    assert shift["in_words"].startswith("in the labels"), shift["in_words"]
    assert after["n_source"] <= 40 / 0.5  # class 0's 40 items at its share bound the subsample


# -- calling a label shift: intervals that hold, and no shift from one class of ten by chance -----------

def _estimate(target: list[float], interval: list[list[float]], **details: object):
    from headstart.domain.label_shift import PriorEstimate

    k = len(target)
    return PriorEstimate("em", np.full(k, 1 / k), np.array(target), 200, 80, np.array(interval), 0.95,
                         details=dict(details))


def test_a_shift_is_called_on_the_simultaneous_interval_and_the_global_test() -> None:
    from headstart.domain.label_shift import label_shift_significant

    target = [0.17] + [0.83 / 9] * 9
    marginal = [[0.11, 0.24]] + [[0.05, 0.14]] * 9  # class 0's 95% interval excludes the source's 10%
    joint = [[0.08, 0.28]] + [[0.03, 0.17]] * 9  # at 1 - 0.05 / 10 it does not
    assert not label_shift_significant(_estimate(target, marginal, simultaneous_interval=joint))
    # The global test of "no change" overrules an interval that excludes the source share.
    assert not label_shift_significant(_estimate(target, marginal, p_value_no_shift=0.68))
    assert label_shift_significant(_estimate(target, marginal, simultaneous_interval=marginal, p_value_no_shift=0.01))


def _noisy_two_class(n_val: int, n_target: int, share: float, seed: int) -> tuple[np.ndarray, ...]:
    """Calibrated probabilities of two 1-D Gaussian classes (means 0 and 2, unit variance): a
    classifier that is right on about 84% of the items."""
    rng = np.random.default_rng(seed)

    def draw(n: int, q: float) -> tuple[np.ndarray, np.ndarray]:
        y = (np.arange(n) < round(q * n)).astype(np.int64)
        x = 2 * y + rng.normal(0, 1.0, n)
        p1 = 1 / (1 + np.exp(-(2 * x - 2)))
        return np.stack([1 - p1, p1], 1), y

    ps, ys = draw(n_val, 0.5)
    pt, _ = draw(n_target, share)
    return ps, ys, pt


def test_intervals_carry_the_noise_of_the_few_source_calibration_items() -> None:
    # 40 calibration items and a large target: most of the estimate's error comes from the source
    # side (EM's calibration), which an interval resampling only the target leaves out (it held the
    # true share in 2 of 12 such draws).
    held = 0
    for seed in range(8):
        ps, ys, pt = _noisy_two_class(40, 2000, 0.3, seed)
        est = estimate_prior("em", ps, ys, pt, bootstrap=50, seed=seed)
        assert est.ok
        held += int(est.interval[1, 0] <= 0.3 <= est.interval[1, 1])
        assert est.details["simultaneous_interval"][1][0] <= est.interval[1, 0]
        assert 0 < est.details["bootstrap_l1"] < 1
    assert held >= 6, held


# -- classes the probe cannot tell apart: refused on evidence, not for want of it --------------------------

def test_few_validation_items_of_fairly_separated_classes_are_not_refused() -> None:
    # Four validation items a class, ranked apart with AUC 14/16 = 0.875: a rank test cannot reach 5%
    # on so few, but nothing says the classes are confused.
    p = np.full((8, 2), 0.5)
    score = np.array([3.0, 2.5, 1.2, 0.9, 1.0, 1.1, -2.0, -3.0])  # class 0's items, then class 1's
    p[:, 0] = 1 / (1 + np.exp(-score))
    p[:, 1] = 1 - p[:, 0]
    y = np.repeat([0, 1], 4)
    assert inseparable_pairs(p, y, 2) == []
    # A random split of one class: the AUC is low on evidence, and the pair is named.
    ps, ys, _, _ = _split_class(seed=0)
    found = inseparable_pairs(ps, ys, 5)
    assert [f["classes"] for f in found] == [[1, 4]] and found[0]["auc"] < 0.75


def test_the_inseparable_warning_advises_features_not_merging_first() -> None:
    ps, ys, pt, _ = _split_class(seed=0)
    est = estimate_prior("em", ps, ys, pt, bootstrap=0)
    assert "use a backbone whose features separate them" in est.warning
    assert not est.warning.rstrip().endswith("merge such classes")


# -- gap.md in words ---------------------------------------------------------------------------------------

def test_gap_md_says_rises_for_a_negative_confidence_drop_and_what_the_estimate_rests_on() -> None:
    from headstart.workflows.gap import render

    base = {"source": "s", "target": "t", "backbone": "b", "n_source": 100, "n_target": 200, "verdict": "v",
            "mmd": {"mmd2": 0.01, "p_value": 0.2}, "proxy_a_distance": {"pad": 0.1, "domain_classifier_accuracy": 0.5}}
    trust = {"trusted": True, "confidence_drop": -0.013, "max_confidence_drop": 0.1, "mixture_l1": 0.2,
             "max_mixture_l1": 0.5}
    shift = {"estimator": "em", "classes": ["a", "b"], "source_proportions": [0.5, 0.5], "target": [0.7, 0.3],
             "interval": [[0.6, 0.8], [0.2, 0.4]], "level": 0.95, "bootstrap": 200, "bootstrap_draws": 200,
             "bootstrap_l1": 0.123, "n_target": 200, "n_source": 30, "in_words": "w", "trust": trust}
    md = " ".join(render({**base, "label_shift": shift}).split())
    assert "confidence rises by 0.01 on the target" in md and "drops by -" not in md
    assert "rests on 200 target items and 30 held-out source items" in md
    assert "sampling error at about L1 0.12" in md
    md = " ".join(render({**base, "label_shift": {**shift, "trust": {**trust, "confidence_drop": 0.04}}}).split())
    assert "confidence drops by 0.04 on the target" in md


def test_a_small_gap_verdict_says_but_when_the_class_proportions_moved() -> None:
    from headstart.domain.gap import verdict, verdict_with_shift

    small = verdict(0.2, 0.01, n_source=200, n_target=200)
    assert small.startswith("a small gap")
    moved = verdict_with_shift(small, "in the labels: the class proportions differ (largest change 0: +30 points)")
    assert moved.startswith(small) and "but the class proportions moved" in moved
    assert verdict_with_shift(small, "neither: the class proportions agree") == small
    large = verdict(1.8, 0.001, n_source=200, n_target=200)
    assert verdict_with_shift(large, "both: ...") == large  # a large gap already says to adapt
