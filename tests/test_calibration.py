"""Temperature scaling: fitted on validation, kept only when it helps, saved, exported, applied."""

from __future__ import annotations

import numpy as np
import torch

import headstart
from headstart.heads import LinearHead, TemperatureScaled, build_head
from headstart.evaluation.calibration import apply_temperature, fit_temperature
from headstart.evaluation.metrics import expected_calibration_error


def _overconfident(n: int, seed: int, scale: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose true temperature is ``scale``: labels are drawn from softmax(z / scale)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4)) * 3.0
    true = np.exp(z / scale)
    true /= true.sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=p) for p in true])
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True), y


def test_temperature_recovers_a_known_overconfidence_and_lowers_ece() -> None:
    val_p, val_y = _overconfident(4000, 0)
    cal = fit_temperature(val_p, val_y)
    assert cal["kept"] and 5.0 < cal["temperature"] < 7.0  # the generating temperature is 6
    test_p, test_y = _overconfident(4000, 1)
    after = apply_temperature(test_p, cal["temperature"])
    assert (after.argmax(1) == test_p.argmax(1)).all()  # accuracy unchanged
    assert expected_calibration_error(after, test_y) < 0.03 < 0.2 < expected_calibration_error(test_p, test_y)


def test_a_calibrated_model_keeps_temperature_one() -> None:
    p, y = _overconfident(3000, 2, scale=1.0)
    cal = fit_temperature(p, y)
    assert abs(cal["fitted_temperature"] - 1.0) < 0.1
    tiny = fit_temperature(p[:1], y[:1])
    assert not tiny["kept"] and tiny["temperature"] == 1.0


def test_temperature_head_round_trips_through_its_spec() -> None:
    inner = LinearHead(5, 3)
    head = TemperatureScaled(inner, 2.5)
    x = torch.randn(4, 5)
    assert torch.allclose(head(x), inner(x) / 2.5)
    rebuilt = build_head(head.spec())
    rebuilt.load_state_dict(head.state_dict())
    assert torch.equal(rebuilt(x), head(x))


def test_fit_calibrates_saves_and_reloads(tmp_path, bbc_small) -> None:
    model = headstart.fit(bbc_small, backbone="minilm-l6", max_length=64, out=tmp_path / "m", progress=False,
                          baseline=False)
    cal = model.info["calibration"]
    assert {"temperature", "kept", "val_nll_before", "val_nll_after", "test_ece_before", "test_ece_after"} <= set(cal)
    assert cal["val_nll_after"] <= cal["val_nll_before"]
    assert isinstance(model.head, TemperatureScaled) == cal["kept"]
    card = (tmp_path / "m" / "transfer_card.md").read_text()
    assert "Expected calibration error on the test split" in card
    again = headstart.load(tmp_path / "m")
    assert np.array_equal(again.predict_proba(bbc_small.items[:4]), model.predict_proba(bbc_small.items[:4]))


def test_a_perfect_validation_split_does_not_make_the_model_certain() -> None:
    # 24 validation items, all right, with confident-ish probabilities: the plain NLL optimum would be
    # T -> 0 (every confidence 1.0); the smoothed target and the prior keep the confidence below 1.
    proba = np.full((24, 4), 0.1)
    proba[np.arange(24), np.arange(24) % 4] = 0.7
    cal = fit_temperature(proba, np.arange(24) % 4)
    after = apply_temperature(proba, cal["temperature"]).max(1)
    assert cal["temperature"] > 0.1 and 0.8 < after.mean() < 0.98


def test_too_few_validation_items_leave_the_model_uncalibrated_and_say_so() -> None:
    proba = np.full((6, 4), 0.1)
    proba[np.arange(6), np.arange(6) % 4] = 0.7
    cal = fit_temperature(proba, np.arange(6) % 4)
    assert not cal["kept"] and cal["temperature"] == 1.0 and "6 item(s), too few" in cal["reason"]


def test_a_small_validation_split_sets_the_mean_confidence_to_its_smoothed_accuracy() -> None:
    # 40 items, 36 right, every one an under-confident 0.4 on its top class: under NLL_MIN_ITEMS the
    # temperature makes the mean confidence (36 + 1) / (40 + 2), Laplace's estimate of the accuracy.
    rng = np.random.default_rng(0)
    y = np.arange(40) % 4
    top = y.copy()
    top[rng.choice(40, 4, replace=False)] += 1
    top %= 4
    proba = np.full((40, 4), 0.2)
    proba[np.arange(40), top] = 0.4
    cal = fit_temperature(proba, y)
    assert cal["kept"] and cal["method"] == "confidence matching" and cal["temperature"] < 1
    after = apply_temperature(proba, cal["temperature"])
    assert abs(after.max(1).mean() - 37 / 42) < 1e-3
    assert (after.argmax(1) == top).all()


def test_a_large_validation_split_is_fitted_by_likelihood() -> None:
    p, y = _overconfident(400, 3)
    assert fit_temperature(p, y)["method"] == "log-likelihood"


def test_a_temperature_that_worsens_the_real_validation_log_loss_is_not_kept() -> None:
    # A perfect one-hot model: matching would soften it towards (n + 1) / (n + 2), which raises the
    # log-loss against the real labels, so the model stays as it is.
    y = np.arange(50) % 5
    proba = np.full((50, 5), 1e-9)
    proba[np.arange(50), y] = 1.0
    cal = fit_temperature(proba, y)
    assert not cal["kept"] and cal["temperature"] == 1.0


def test_bad_calibration_input_is_a_clear_error() -> None:
    import pytest

    from headstart.errors import DataError

    p = np.full((20, 4), 0.25)
    y = np.arange(20) % 4
    bad = p.copy()
    bad[0, 0] = np.nan
    for args, words in (((bad, y), "NaN"), ((p, y - 1), "must lie in 0..3"), ((p, y[:10]), "one label per item"),
                        ((p[:, 0], y), "one label per item")):
        with pytest.raises(DataError, match=words):
            fit_temperature(*args)
