"""Domain adaptation: gap measures, alignment losses, label-free validators, the guard, fit --target."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import headstart
from headstart.cli.main import cli
from headstart.methods.domain_adapt import choose
from headstart.methods.domain_adapt import AdaptConfig
from headstart.domain.gap import mmd_test, proxy_a_distance
from headstart.domain.losses import ALIGNERS, build_aligner, mk_mmd2, reverse_gradient
from headstart.domain.validators import information_maximisation, reverse_validation, soft_neighbourhood_density
from headstart.errors import DataError

from conftest import write_csv, write_png


def _batch(seed: int, shift: float = 0.0, n: int = 32, d: int = 16, k: int = 4):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, d, generator=g) + shift
    return f, torch.randn(n, k, generator=g)


# -- alignment losses ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALIGNERS.names())
def test_every_aligner_gives_a_finite_loss_with_gradients_to_both_domains(name) -> None:
    torch.manual_seed(0)
    aligner = build_aligner(name, 16, 4)
    aligner.set_progress(0.5)
    (f_s, l_s), (f_t, l_t) = _batch(0), _batch(1, shift=2.0)
    for t in (f_s, f_t, l_s, l_t):
        t.requires_grad_(True)
    loss = aligner(f_s, f_t, l_s, l_t)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    if name == "mcc":  # MCC only looks at the target predictions
        assert l_t.grad is not None and l_t.grad.abs().sum() > 0
    else:
        assert f_s.grad.abs().sum() > 0 and f_t.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["coral", "mmd"])
def test_statistical_aligners_grow_with_the_shift(name) -> None:
    aligner = build_aligner(name, 16, 4)
    (f_s, l), (f_t, _) = _batch(0), _batch(1)
    near = aligner(f_s, f_t, l, l)
    far = aligner(f_s, f_t * 3 + 2.0, l, l)
    assert far > 5 * near
    assert float(aligner(f_s, f_s, l, l)) == pytest.approx(0.0, abs=1e-6)


def test_coral_matches_the_formula() -> None:
    (f_s, l), (f_t, _) = _batch(0), _batch(1, shift=1.0)
    xs, xt = f_s.double().numpy(), f_t.double().numpy()
    expected = np.mean((xs.mean(0) - xt.mean(0)) ** 2) + np.mean((np.cov(xs.T) - np.cov(xt.T)) ** 2)
    assert float(build_aligner("coral", 16, 4)(f_s, f_t, l, l)) == pytest.approx(expected, rel=1e-4)


def test_mmd_is_zero_for_identical_samples_and_symmetric() -> None:
    x, _ = _batch(0)
    y, _ = _batch(1, shift=1.0)
    assert float(mk_mmd2(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(mk_mmd2(x, y)) == pytest.approx(float(mk_mmd2(y, x)), rel=1e-5)


def test_mcc_is_low_for_confident_distinct_classes_and_high_for_confusion() -> None:
    mcc = build_aligner("mcc", 16, 4)
    f, _ = _batch(0)
    confident = torch.eye(4).repeat(8, 1) * 20  # every class, each prediction sure
    confused = torch.zeros(32, 4)
    assert float(mcc(f, f, confident, confident)) < 0.05
    assert float(mcc(f, f, confused, confused)) > 0.5


def test_gradient_reversal_flips_the_sign() -> None:
    x = torch.ones(3, requires_grad=True)
    reverse_gradient(x, 0.5).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -0.5))


def test_dann_ramps_the_reversal_with_progress() -> None:
    dann = build_aligner("dann", 16, 4)
    (f_s, l), (f_t, _) = _batch(0), _batch(1, shift=1.0)
    grads = []
    for p in (0.0, 1.0):
        f = f_s.clone().requires_grad_(True)
        dann.set_progress(p)
        dann(f, f_t, l, l).backward()
        grads.append(f.grad.abs().sum())
    assert grads[0] == 0 and grads[1] > 0  # no reversed gradient at the start, full at the end


# -- validators ------------------------------------------------------------------------------------

def test_information_maximisation_rewards_confident_diverse_predictions() -> None:
    diverse = np.eye(4)[np.arange(40) % 4] * 0.97 + 0.0075
    collapsed = np.tile([0.97, 0.01, 0.01, 0.01], (40, 1))
    uniform = np.full((40, 4), 0.25)
    assert information_maximisation(diverse) > 0.8
    assert information_maximisation(collapsed) < 0.05
    assert information_maximisation(uniform) == pytest.approx(0.0, abs=1e-9)


def test_reverse_validation_separates_consistent_from_scrambled_pseudo_labels() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 4
    y_s = np.repeat(np.arange(3), 30)
    z_s = centres[y_s] + rng.normal(size=(90, 8))
    y_t = np.repeat(np.arange(3), 30)
    z_t = centres[y_t] + rng.normal(size=(90, 8))
    right = np.eye(3)[y_t]
    scrambled = np.eye(3)[rng.permutation(y_t)]
    assert reverse_validation(right, z_t=z_t, z_s=z_s, y_s=y_s) > 0.95
    assert reverse_validation(scrambled, z_t=z_t, z_s=z_s, y_s=y_s) < 0.6
    one_class = np.eye(3)[np.zeros(90, dtype=int)]
    assert reverse_validation(one_class, z_t=z_t, z_s=z_s, y_s=y_s) == pytest.approx(1 / 3)


def test_snd_is_in_range() -> None:
    p = np.random.default_rng(0).dirichlet(np.ones(5), size=50)
    assert 0.0 < soft_neighbourhood_density(p) <= 1.0


# -- the guard and the choice ----------------------------------------------------------------------

def _summary(**methods):
    return {m: {"source_val_accuracy": (0.9, 0.0), "im": (im, 0.0), "rv": (rv, 0.0), "snd": (0.5, 0.0)}
            for m, (im, rv) in methods.items()}


def test_guard_keeps_source_only_when_adaptation_looks_worse() -> None:
    chosen, reasons = choose(_summary(**{"source-only": (0.5, 0.8), "dann": (0.3, 0.6)}), AdaptConfig(method="dann"),
                             labelled=False)
    assert chosen == "source-only" and "negative-transfer guard" in reasons[-1]
    chosen, _ = choose(_summary(**{"source-only": (0.5, 0.8), "dann": (0.6, 0.85)}), AdaptConfig(method="dann"),
                       labelled=False)
    assert chosen == "dann"


def test_guard_counts_a_tie_as_no_reason_to_adapt() -> None:
    # dann changed nothing a validator can see on one of them: source-only stays.
    tie = _summary(**{"source-only": (0.229, 0.364), "dann": (0.2295, 0.9)})
    chosen, reasons = choose(tie, AdaptConfig(method="dann"), labelled=False)
    assert chosen == "source-only" and "im" in reasons[-1] and "tie" in reasons[-1]
    clear = _summary(**{"source-only": (0.229, 0.364), "dann": (0.235, 0.9)})
    assert choose(clear, AdaptConfig(method="dann"), labelled=False)[0] == "dann"
    labelled = _summary(**{"source-only": (0.5, 0.8), "mcc": (0.9, 0.9)})
    labelled["source-only"]["target_accuracy"], labelled["mcc"]["target_accuracy"] = (0.6, 0.0), (0.6, 0.0)
    chosen, reasons = choose(labelled, AdaptConfig(method="mcc"), labelled=True)
    assert chosen == "source-only" and "no gain" in reasons[-1]


def test_guard_uses_target_labels_when_given() -> None:
    s = _summary(**{"source-only": (0.5, 0.8), "mcc": (0.9, 0.9)})
    s["source-only"]["target_accuracy"], s["mcc"]["target_accuracy"] = (0.6, 0.0), (0.5, 0.0)
    chosen, reasons = choose(s, AdaptConfig(method="mcc"), labelled=True)
    assert chosen == "source-only" and "negative transfer" in reasons[-1]


def test_auto_picks_the_best_mean_rank_over_validators() -> None:
    s = _summary(**{"source-only": (0.1, 0.5), "dann": (0.2, 0.6), "mmd": (0.3, 0.9), "mcc": (0.8, 0.7)})
    chosen, reasons = choose(s, AdaptConfig(method="auto"), labelled=False)
    assert chosen in ("mmd", "mcc") and "label-free choice" in reasons[0]


# -- gap measures ----------------------------------------------------------------------------------

def test_mmd_test_and_proxy_a_distance_tell_same_from_shifted() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 10)), rng.normal(size=(200, 10))
    c = rng.normal(size=(200, 10)) + 1.5
    same, shifted = mmd_test(a, b, permutations=100), mmd_test(a, c, permutations=100)
    assert same["p_value"] > 0.05 and shifted["p_value"] < 0.02
    assert proxy_a_distance(a, b)["pad"] < 0.5 and proxy_a_distance(a, c)["pad"] > 1.5


def test_gap_command_writes_report_and_plot(tmp_path) -> None:
    src, tgt = tmp_path / "src", tmp_path / "tgt"
    for i in range(12):
        write_png(src / ("a" if i % 2 else "b") / f"{i}.png", value=i, size=24)
        write_png(tgt / f"{i}.png", value=100 + i, size=24)
    result = CliRunner().invoke(cli, ["gap", str(src), str(tgt), "--backbone", "raw-pixels", "--out",
                                      str(tmp_path / "gap"), "--permutations", "20"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "gap" / "gap.json").read_text())
    assert 0 <= report["proxy_a_distance"]["pad"] <= 2 and 0 < report["mmd"]["p_value"] <= 1
    assert (tmp_path / "gap" / "gap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Verdict" in result.output


# -- end to end ------------------------------------------------------------------------------------

def test_adaptation_beats_source_only_on_mnist_to_uci_digits(mnist_small) -> None:
    """Real weights and data: MNIST (600) -> UCI digits (500), efficientnet-lite0 features, MMD."""
    target = headstart.load_data("builtin:digits:50")
    model = headstart.fit(mnist_small, target=target, strategy="domain-adapt",
                          options={"method": "mmd", "epochs": 8, "guard": False}, progress=False, baseline=False)
    summary = model.info["strategy"]["details"]["summary"]
    source_only, mmd = summary["source-only"]["target_accuracy"][0], summary["mmd"]["target_accuracy"][0]
    assert mmd > source_only + 0.05, summary
    assert model.info["metrics"]["target"]["accuracy"] == pytest.approx(mmd, abs=0.02)
    card = model.info
    assert card["strategy"]["details"]["gap_before"]["pad"] >= card["strategy"]["details"]["gap_after"]["pad"]


def test_text_adaptation_fine_tunes_end_to_end_and_saves(bbc_small, tiny_bert_dir, tmp_path) -> None:
    """The finetune mode (backbone in the loop, the GPU recipe) on a tiny random BERT, on CPU."""
    news = bbc_small.subset(range(0, 150, 3))
    target = write_csv(tmp_path / "target.csv", [(t.upper()[:300],) for t in bbc_small.items[1:150:3]], header="text")
    out = tmp_path / "run"
    model = headstart.fit(news, target=str(target), backbone=f"hf:{tiny_bert_dir}", strategy="domain-adapt",
                          options={"method": "dann", "mode": "finetune", "epochs": 2, "batch_size": 8, "guard": False},
                          out=out, progress=False, baseline=False)
    assert model.info["strategy"]["chosen"]["chosen_strategy"] == "dann"
    assert model.backbone_trained
    loaded = headstart.load(out)
    assert np.allclose(loaded.predict_proba(news.items[:4]), model.predict_proba(news.items[:4]), atol=1e-6)
    card = (out / "transfer_card.md").read_text()
    assert "## Domain adaptation" in card and "dann" in card


def test_bad_targets_give_clear_errors(mnist_small, bbc_small, tmp_path) -> None:
    small = mnist_small.subset(range(0, 600, 10))
    with pytest.raises(DataError, match="holds images but the target .* holds texts"):
        headstart.fit(small, target=bbc_small, strategy="domain-adapt", progress=False, baseline=False)
    odd = tmp_path / "odd"
    for i, label in enumerate(["7", "seven", "eight"]):
        write_png(odd / label / f"{i}.png", value=i)
    with pytest.raises(DataError, match="label\\(s\\) the source does not: eight, seven"):
        headstart.fit(small, target=str(odd), strategy="domain-adapt", progress=False, baseline=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=f"target data cannot be used: No images found in '{tmp_path / 'empty'}'"):
        headstart.fit(small, target=str(tmp_path / "empty"), strategy="domain-adapt", progress=False, baseline=False)
    with pytest.raises(headstart.errors.ConfigError, match="needs --target"):
        CliRunner().invoke(cli, ["fit", "builtin:digits:10", "--adapt", "mmd"], catch_exceptions=False,
                           standalone_mode=False)
    # options given where a strategy goes, and two methods at once: errors that say how to ask
    with pytest.raises(headstart.errors.ConfigError, match="looks like an option: options go with --option"):
        CliRunner().invoke(cli, ["fit", "builtin:digits:10", "--target", "builtin:digits:10", "-s", "label_shift=on"],
                           catch_exceptions=False, standalone_mode=False)
    with pytest.raises(headstart.errors.ConfigError, match="--adapt mcc and --option method=coral"):
        CliRunner().invoke(cli, ["fit", "builtin:digits:10", "--target", "builtin:digits:10", "--adapt", "mcc",
                                 "--option", "method=coral"], catch_exceptions=False, standalone_mode=False)


# -- per-domain normalisation and curriculum self-training ----------------------------------------

def _remixed_blobs(n_target: int, seed: int = 5, n_source: int = 240):
    """A pure label shift: the same 4 class blobs in 16 dimensions in both domains (``n_source``
    source items, classes even), the target 70% class 0."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.0, (4, 16))
    ys = rng.integers(0, 4, n_source)
    yt = rng.choice(4, n_target, p=[0.7, 0.1, 0.1, 0.1])
    xs = (centres[ys] + rng.normal(0, 1.0, (n_source, 16))).astype(np.float32)
    xt = (centres[yt] + rng.normal(0, 1.0, (n_target, 16))).astype(np.float32)
    return xs, ys, xt, yt


def _shifted_blobs(seed: int = 0, n: int = 240, d: int = 16, k: int = 4):
    """Source blobs, and a target whose every feature is rescaled and offset (the same classes)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.0, (k, d))
    ys, yt = rng.integers(0, k, n), rng.integers(0, k, n)
    xs = centres[ys] + rng.normal(0, 1.0, (n, d))
    scale = rng.uniform(0.5, 2.0, d)
    # towards class 0's side (source-only then says class 0), plus a larger move off the classes' span
    # (an input shift no change of class proportions explains)
    basis = np.linalg.qr((centres - centres.mean(0)).T)[0]
    off_span = rng.normal(0, 10.0, d)
    offset = 3.0 * (centres[0] - centres.mean(0)) + off_span - basis @ (basis.T @ off_span)
    xt = (centres[yt] + rng.normal(0, 1.0, (n, d))) * scale + offset
    return xs.astype(np.float32), ys, xt.astype(np.float32), yt


def _feature_parts(xs, ys, xt, k):
    from headstart.data import Dataset
    from headstart.data.splits import Splits

    names = [str(c) for c in range(k)]

    def ds(x, y, tag):
        return Dataset("text", ["."] * len(x), [names[i] for i in y] if y is not None else None,
                       [f"{tag}{i}" for i in range(len(x))], source=tag)

    cut = int(0.75 * len(xs))
    parts = Splits(ds(xs[:cut], ys[:cut], "s"), ds(xs[cut:], ys[cut:], "v"), ds(xs[:0], ys[:0], "x"))
    feats = {"train": xs[:cut], "val": xs[cut:], "target": xt}
    return parts, ds(xt, None, "t"), names, {"train": ys[:cut], "val": ys[cut:]}, feats


class _FakeBackbone:
    def __init__(self, d: int) -> None:
        from headstart.backbones.base import BackboneCard, InputSpec

        self.card = BackboneCard(name="fake", modality="text", feature_dim=d, source="test", license="none",
                                 input=InputSpec())

    def state_dict(self):
        return {}


def test_per_domain_normalisation_and_self_training_recover_a_shifted_domain() -> None:
    from headstart.domain.self_training import (choose_strength, curriculum_self_train, domain_statistics, normalise)

    xs, ys, xt, yt = _shifted_blobs()
    plain = normalise(xs, *domain_statistics(xs)), normalise(xt, *domain_statistics(xs))
    own = normalise(xt, *domain_statistics(xt))
    C, scores = choose_strength(plain[0][:180], ys[:180], plain[0][180:], ys[180:], 4)
    assert set(scores) and C in scores
    stats = domain_statistics(xs)  # source-only: the probe on source-standardised features, no pseudo-labels
    source_only = curriculum_self_train(normalise(xs, *stats, l2=False), ys, normalise(xt, *stats, l2=False), 4, C,
                                        curriculum=(1e-9,))
    adapted = curriculum_self_train(plain[0], ys, own, 4, C)
    acc_source_only = (source_only.proba(normalise(xt, *stats, l2=False)).argmax(1) == yt).mean()
    acc_adapted = (adapted.proba(own).argmax(1) == yt).mean()
    assert acc_source_only < 0.6 and acc_adapted > 0.9, (acc_source_only, acc_adapted)
    assert [r["pseudo_labelled"] for r in adapted.rounds] == sorted(r["pseudo_labelled"] for r in adapted.rounds)
    assert adapted.rounds[-1]["pseudo_labelled"] == len(xt)


def test_self_train_head_applies_the_target_statistics_and_survives_a_safetensors_round_trip(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    from headstart.domain.self_training import as_bottleneck_head, domain_statistics, normalise
    from headstart.heads import build_head

    xs, ys, xt, _ = _shifted_blobs(1)
    mean, scale = domain_statistics(xt)
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(4, 16)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    head = as_bottleneck_head(w, b, mean, scale)
    expected = normalise(xt, mean, scale) @ w.T + b  # the probe on L2-normalised per-domain features
    with torch.no_grad():
        assert np.allclose(head(torch.as_tensor(xt)).numpy(), expected, atol=1e-4)
    save_file({n: v.contiguous() for n, v in head.state_dict().items()}, str(tmp_path / "head.safetensors"))
    spec = json.loads(json.dumps(head.spec()))
    again = build_head(spec)
    again.load_state_dict(load_file(str(tmp_path / "head.safetensors")))
    again.eval()
    assert np.allclose(again.mean.numpy(), mean) and np.allclose(again.std.numpy(), scale)
    with torch.no_grad():
        assert np.allclose(again(torch.as_tensor(xt)).numpy(), expected, atol=1e-4)


def test_auto_picks_self_training_on_shifted_blobs_and_keeps_the_target_statistics() -> None:
    from headstart.methods.domain_adapt import adapt_domain

    xs, ys, xt, yt = _shifted_blobs(2)
    parts, target, names, y, feats = _feature_parts(xs, ys, xt, 4)
    config = AdaptConfig(method="auto", epochs=2, batch_size=32, label_shift="off")
    res = adapt_domain(_FakeBackbone(16), parts, target, names, y, config, seeds=(0,), features=feats,
                       candidates=("coral", "self-train"), progress=False, guard_with_labels=False,
                       target_labels=yt)
    assert res.chosen == "self-train", res.reasons
    assert res.summary["self-train"]["target_accuracy"][0] > res.summary["source-only"]["target_accuracy"][0] + 0.3
    assert np.allclose(res.head.mean.numpy(), xt.mean(0), atol=1e-4)  # the target's statistics, not the source's
    with torch.no_grad():
        assert (res.head(torch.as_tensor(xt)).argmax(1).numpy() == yt).mean() > 0.9


def test_per_domain_normalisation_for_an_aligner_puts_the_target_statistics_in_the_head() -> None:
    from headstart.methods.domain_adapt import adapt_domain

    xs, ys, xt, yt = _shifted_blobs(3)
    parts, target, names, y, feats = _feature_parts(xs, ys, xt, 4)
    config = AdaptConfig(method="coral", epochs=2, batch_size=32, label_shift="off", normalise="per-domain",
                         guard=False)
    res = adapt_domain(_FakeBackbone(16), parts, target, names, y, config, seeds=(0,), features=feats,
                       progress=False, target_labels=yt)
    assert res.chosen == "coral"
    assert [r["normalise"] for r in res.runs] == ["source", "per-domain"]
    assert np.allclose(res.head.mean.numpy(), xt.mean(0), atol=1e-4)
    with torch.no_grad():  # the kept head reproduces the accuracy measured in training
        acc = (res.head(torch.as_tensor(xt)).argmax(1).numpy() == yt).mean()
    assert acc == pytest.approx(res.summary["coral"]["target_accuracy"][0], abs=1e-6)


def test_self_training_bad_input_errors() -> None:
    from headstart.domain.self_training import curriculum_self_train, domain_statistics
    from headstart.errors import ConfigError as CE
    from headstart.methods.domain_adapt import adapt_domain

    xs, ys, xt, _ = _shifted_blobs(4)
    with pytest.raises(DataError, match="hold 1 item\\(s\\); per-domain statistics need at least 2"):
        domain_statistics(xt[:1], "target features")
    bad = xt.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        domain_statistics(bad)
    with pytest.raises(DataError, match="same width"):
        curriculum_self_train(xs, ys, xt[:, :8], 4, 1.0)
    with pytest.raises(DataError, match="source labels"):
        curriculum_self_train(xs, ys[:-1], xt, 4, 1.0)
    with pytest.raises(CE, match="curriculum"):
        curriculum_self_train(xs, ys, xt, 4, 1.0, curriculum=(0.5, 1.5))
    parts, target, names, y, feats = _feature_parts(xs, ys, xt, 4)
    with pytest.raises(CE, match="method=.self-train. works on frozen features only"):
        adapt_domain(_FakeBackbone(16), parts, target, names, y,
                     AdaptConfig(method="self-train", mode="finetune"), features=feats, progress=False)
    with pytest.raises(CE, match="normalise"):
        AdaptConfig(normalise="target")


def test_label_shift_keeps_per_domain_statistics_and_self_training_out() -> None:
    """Same inputs, other class proportions: the target's mean moved only because the classes re-mixed,
    which per-domain standardisation would erase, so self-train is not tried and per-domain is not applied."""
    from headstart.domain.self_training import mixture_explained_share
    from headstart.methods.domain_adapt import adapt_domain

    xs, ys, xt, _ = _remixed_blobs(240)
    share, mix = mixture_explained_share(xs, ys, xt, 4)
    assert share > 0.8 and mix.argmax() == 0
    _, _, shifted, _ = _shifted_blobs(5)  # an input shift is not explained by re-mixing classes
    assert mixture_explained_share(*_shifted_blobs(5)[:2], shifted, 4)[0] < 0.5
    parts, target, names, y, feats = _feature_parts(xs, ys, xt, 4)
    res = adapt_domain(_FakeBackbone(16), parts, target, names, y,
                       AdaptConfig(method="self-train", epochs=1, label_shift="off"), features=feats, progress=False)
    assert res.chosen == "source-only" and "self-train" not in res.summary
    assert res.reasons[0].startswith("self-train not tried") and "class proportions" in res.reasons[0]
    assert res.normalisation["per_domain_allowed"] is False


@pytest.mark.slow
def test_self_train_model_saves_and_loads_with_the_target_statistics(mnist_small, tmp_path) -> None:
    """Real weights: MNIST (600) -> UCI digits (200); the saved head normalises with the target's statistics."""
    from headstart.heads import BottleneckHead

    target = headstart.load_data("builtin:digits:20")
    out = tmp_path / "run"
    model = headstart.fit(mnist_small, target=target, strategy="domain-adapt",
                          options={"method": "self-train", "guard": False, "epochs": 1}, out=out, progress=False,
                          baseline=False)
    assert model.info["strategy"]["details"]["chosen"] == "self-train"
    loaded = headstart.load(out)
    items = target.items[:16]
    assert np.allclose(loaded.predict_proba(items), model.predict_proba(items), atol=1e-5)
    heads = [m for m in loaded.head.modules() if isinstance(m, BottleneckHead)]
    feats = model.features(target)
    assert len(heads) == 1 and np.allclose(heads[0].mean.numpy(), feats.mean(0), atol=1e-3)


# -- the guard's class-proportion check --------------------------------------------------------------

def _label_and_input_shift(seed: int = 0, n: int = 400, d: int = 16, k: int = 4):
    """Overlapping source classes, and a target with the same classes at other proportions (class 0 at
    60%) moved off the classes' span. Per-domain centring then also removes the move of the target's
    mean that the extra class-0 items cause, which pushes class 0 into its neighbours: self-training
    loses accuracy while spreading its predictions over the classes, which both validators reward."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 0.7, (k, d))
    ys = rng.integers(0, k, n)
    yt = rng.choice(k, n, p=[0.6] + [0.4 / (k - 1)] * (k - 1))
    basis = np.linalg.qr((centres - centres.mean(0)).T)[0]
    off = rng.normal(0, 1, d)
    off -= basis @ (basis.T @ off)
    xs = centres[ys] + rng.normal(0, 1.0, (n, d))
    xt = centres[yt] + rng.normal(0, 1.0, (n, d)) + 1.5 * off / np.linalg.norm(off)
    return xs.astype(np.float32), ys, xt.astype(np.float32), yt


def test_class_proportion_check_keeps_source_only_when_self_training_erases_a_label_shift() -> None:
    from headstart.methods.domain_adapt import adapt_domain

    xs, ys, xt, yt = _label_and_input_shift()
    parts, target, names, y, feats = _feature_parts(xs, ys, xt, 4)
    res = adapt_domain(_FakeBackbone(16), parts, target, names, y,
                       AdaptConfig(method="self-train", epochs=3, label_shift="off"), seeds=(0,), features=feats,
                       progress=False, target_labels=yt, guard_with_labels=False)
    s = res.summary
    # by construction: self-train runs (the input shift hides the label shift from the gate), loses
    # accuracy, and both validators still prefer it
    assert res.normalisation["per_domain_allowed"]
    assert s["self-train"]["target_accuracy"][0] < s["source-only"]["target_accuracy"][0] - 0.02
    assert s["self-train"]["im"][0] > s["source-only"]["im"][0] and s["self-train"]["rv"][0] > s["source-only"]["rv"][0]
    # the check: source-only's estimate is trusted here, and self-train's predictions stray from it
    assert res.proportion_check["trusted"]
    assert s["self-train"]["proportion_excess"][0] > 0.05
    assert res.chosen == "source-only"
    assert any(r.startswith("class-proportion check: self-train") for r in res.reasons), res.reasons


def test_class_proportion_check_stands_aside_where_source_only_cannot_estimate_the_proportions() -> None:
    """An input shift that leaves source-only unsure on the target: its estimate is not trusted, and
    self-training (which recovers the domain) is kept as before."""
    from headstart.domain.validators import proportion_excess, proportions_trusted

    rng = np.random.default_rng(0)
    sure = np.eye(4)[rng.integers(0, 4, 200)] * 0.9 + 0.025
    unsure = np.full((200, 4), 0.25) + rng.normal(0, 0.01, (200, 4))
    even = np.full(4, 0.25)
    assert proportions_trusted(sure, sure, even)[0]
    trusted, info = proportions_trusted(sure, unsure, even)
    assert not trusted and info["confidence_drop"] > 0.5
    assert not proportions_trusted(sure, sure, even, mixture=np.array([1.0, 0, 0, 0]))[0]  # the mixture disagrees
    skew = np.array([0.7, 0.1, 0.1, 0.1])
    follows = np.eye(4)[np.repeat(np.arange(4), (skew * 100).astype(int))]
    erases = np.eye(4)[np.repeat(np.arange(4), 25)]
    assert proportion_excess(follows, follows, skew) == 0.0
    assert proportion_excess(erases, follows, skew) == pytest.approx(0.9)  # |0.25-0.7| + 3 |0.25-0.1|

    from headstart.methods.domain_adapt import adapt_domain

    xs, ys, xt, yt = _shifted_blobs(2)
    parts, target, names, y, feats = _feature_parts(xs, ys, xt, 4)
    res = adapt_domain(_FakeBackbone(16), parts, target, names, y,
                       AdaptConfig(method="self-train", epochs=2, label_shift="off"), seeds=(0,), features=feats,
                       progress=False)
    assert not res.proportion_check["trusted"] and "proportion_excess" not in res.summary["self-train"]
    assert res.chosen == "self-train", res.reasons
    assert any(r.startswith("class-proportion check not applied") and "not trusted" in r for r in res.reasons)


def test_choose_drops_candidates_that_distort_the_class_proportions() -> None:
    s = _summary(**{"source-only": (0.5, 0.8), "self-train": (0.9, 0.95), "mmd": (0.6, 0.85)})
    s["source-only"]["proportion_excess"] = (0.0, 0.0)
    s["self-train"]["proportion_excess"], s["mmd"]["proportion_excess"] = (0.12, 0.0), (0.01, 0.0)
    chosen, reasons = choose(s, AdaptConfig(method="auto"), labelled=False)
    assert chosen == "mmd" and reasons[0].startswith("class-proportion check: self-train")
    del s["mmd"]
    chosen, reasons = choose(s, AdaptConfig(method="auto"), labelled=False)
    assert chosen == "source-only" and "no candidate left" in reasons[-1]
    chosen, _ = choose(s, AdaptConfig(method="auto", guard=False), labelled=False)
    assert chosen == "self-train"  # the check is part of the guard


def test_self_training_can_start_from_the_aligner_the_validators_prefer() -> None:
    from dataclasses import replace

    from headstart.domain.self_training import curriculum_self_train
    from headstart.methods.domain_adapt import adapt_domain

    xs, ys, xt, yt = _shifted_blobs(2)
    parts, target, names, y, feats = _feature_parts(xs, ys, xt, 4)
    config = AdaptConfig(method="auto", epochs=2, batch_size=32, label_shift="off", self_train_start="aligners")
    res = adapt_domain(_FakeBackbone(16), parts, target, names, y, config, seeds=(0, 1), features=feats,
                       candidates=("coral", "mmd", "self-train"), progress=False, guard_with_labels=False,
                       target_labels=yt)
    started = {r["started_from"] for r in res.runs if r["method"] == "self-train"}
    assert started <= {"coral", "mmd"} and len(started) == 1
    assert res.summary["self-train"]["target_accuracy"][0] > 0.9
    res = adapt_domain(_FakeBackbone(16), parts, target, names, y, replace(config, self_train_start="ensemble"),
                       seeds=(0,), features=feats, candidates=("coral", "self-train"), progress=False)
    assert [r["started_from"] for r in res.runs if r["method"] == "self-train"] == ["ensemble"]
    with pytest.raises(DataError, match="starting probabilities have shape"):
        curriculum_self_train(xs, ys, xt, 4, 1.0, init=np.full((len(xt), 3), 1 / 3))
    with pytest.raises(headstart.errors.ConfigError, match="self_train_start"):
        AdaptConfig(self_train_start="cdan")


# -- the prior-correction decision -------------------------------------------------------------------

def _prior_estimate(target, interval_halfwidth=0.02):
    from headstart.domain.label_shift import PriorEstimate

    q = np.asarray(target, dtype=float)
    return PriorEstimate("em", np.full(len(q), 1 / len(q)), q, 1000, 200,
                         interval=np.stack([q - interval_halfwidth, q + interval_halfwidth], 1))


def test_prior_correction_follows_a_trusted_estimate_and_not_reverse_validation() -> None:
    from headstart.methods.domain_adapt import _decide_prior

    s = _summary(**{"source-only": (0.5, 0.8), "source-only+prior": (0.5, 0.7)})  # RV drops with the correction
    moved = _prior_estimate([0.7, 0.1, 0.1, 0.1])
    config = AdaptConfig(method="source-only")
    apply, why = _decide_prior(moved, "source-only", s, config, labelled=False, trust={"trusted": True})
    assert apply and "passes the trust check" in why
    # untrusted: stands aside, and names the sign that failed
    untrusted = {"trusted": False, "confidence_drop": 0.3, "max_confidence_drop": 0.1, "mixture_l1": 0.2,
                 "max_mixture_l1": 0.5}
    apply, why = _decide_prior(moved, "source-only", s, config, labelled=False, trust=untrusted)
    assert not apply and "not trusted" in why and "confidence drops by 0.30" in why and "mixture" not in why
    # trusted but not moved: nothing to correct
    still = _prior_estimate([0.26, 0.25, 0.25, 0.24])
    apply, why = _decide_prior(still, "source-only", s, config, labelled=False, trust={"trusted": True})
    assert not apply and "did not measurably move" in why
    # label_shift="on" corrects whatever the signs say
    assert _decide_prior(moved, "source-only", s, AdaptConfig(label_shift="on"), labelled=False, trust=untrusted)[0]
    # with target labels a tie is no reason to correct
    tied = _summary(**{"source-only": (0.5, 0.8), "source-only+prior": (0.5, 0.7)})
    tied["source-only"]["target_accuracy"], tied["source-only+prior"]["target_accuracy"] = (0.93, 0.0), (0.93, 0.0)
    apply, why = _decide_prior(moved, "source-only", tied, config, labelled=True, trust={"trusted": True})
    assert not apply and "does not rise" in why
    tied["source-only+prior"]["target_accuracy"] = (0.95, 0.0)
    assert _decide_prior(moved, "source-only", tied, config, labelled=True, trust={"trusted": True})[0]
    # too few validation items of a class to calibrate on: stands aside, naming the class
    names = ["sport", "tech", "politics", "business"]
    apply, why = _decide_prior(moved, "source-only", s, config, labelled=False, trust={"trusted": True},
                               val_counts=np.array([30, 8, 30, 30]), class_names=names)
    assert not apply and "8 source validation item(s) of class tech" in why and "sport 70%" in why
    assert _decide_prior(moved, "source-only", s, config, labelled=False, trust={"trusted": True},
                         val_counts=np.array([30, 20, 30, 30]), class_names=names)[0]


def test_domain_adapt_corrects_a_pure_label_shift() -> None:
    from headstart.methods.domain_adapt import adapt_domain

    xs, ys, xt, _ = _remixed_blobs(400, n_source=480)  # 120 validation items: enough of each class to calibrate
    parts, target, names, y, feats = _feature_parts(xs, ys, xt, 4)
    config = AdaptConfig(method="source-only", epochs=1, label_shift="auto")
    res = adapt_domain(_FakeBackbone(16), parts, target, names, y, config, features=feats, progress=False)
    assert res.label_shift["trust"]["trusted"] and res.label_shift["applied"], res.reasons
    assert np.argmax(res.label_shift["estimate"]["target"]) == 0


def test_domain_adapt_stands_aside_from_the_prior_under_a_large_input_shift() -> None:
    from headstart.methods.domain_adapt import adapt_domain

    xs, ys, xt, _ = _shifted_blobs(2)
    parts, target, names, y, feats = _feature_parts(xs, ys, xt, 4)
    config = AdaptConfig(method="source-only", epochs=1, label_shift="auto")
    res = adapt_domain(_FakeBackbone(16), parts, target, names, y, config, features=feats, progress=False)
    assert not res.label_shift["trust"]["trusted"] and not res.label_shift["applied"]
    assert any("not trusted" in r for r in res.reasons), res.reasons


def test_a_tiny_target_gets_no_statistics_of_its_own() -> None:
    from headstart.methods.domain_adapt import adapt_domain

    xs, ys, xt, _ = _shifted_blobs(4)
    parts, target, names, y, feats = _feature_parts(xs, ys, xt[:5], 4)
    config = AdaptConfig(method="auto", epochs=1, normalise="per-domain")
    res = adapt_domain(_FakeBackbone(16), parts, target, names, y, config, features=feats, progress=False,
                       candidates=("coral", "self-train"))
    assert "self-train" not in {r["method"] for r in res.runs}
    assert {r.get("normalise", "source") for r in res.runs} == {"source"}
    assert any("self-train not tried: the target has 5 item(s)" in r for r in res.reasons), res.reasons
    assert any("normalise=per-domain not applied: the target has 5 item(s)" in r for r in res.reasons)


def test_importance_weighting_never_uses_an_untrusted_estimate(monkeypatch) -> None:
    import headstart.methods.domain_adapt as da
    from headstart.domain.label_shift import PriorEstimate

    monkeypatch.setattr(da, "label_shift_significant", lambda est: True)  # moved, so only trust decides
    rng = np.random.default_rng(0)
    sure = np.eye(4)[rng.integers(0, 4, 80)] * 0.96 + 0.01  # the source validation split: confident
    unsure = np.full((120, 4), 0.25)  # the target: the classifier has lost its footing
    est = PriorEstimate("em", np.full(4, 0.25), np.array([0.97, 0.01, 0.01, 0.01]), n_target=120, n_source=80)
    said: list[str] = []
    weighted, info = da._importance_weighting({("source-only", 0): (sure, unsure, np.full(4, 0.25))}, 0,
                                              lambda *a, **k: est, np.full(4, 0.25), None, None,
                                              rng.integers(0, 4, 200), False, said.append)
    assert weighted is None and not info["used"] and "not trusted" in info["reason"]
    assert any(s.startswith("WARNING: importance weighting off") for s in said)
