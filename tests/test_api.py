"""The one-liners read like scikit-learn: fit(X, y), positional labels."""

from __future__ import annotations

import numpy as np
import pytest

import headstart


@pytest.mark.slow
def test_fit_takes_labels_positionally() -> None:
    rng = np.random.default_rng(0)
    images = [np.full((16, 16, 3), 40 if i % 2 else 210, dtype=np.uint8) + rng.integers(0, 20, (16, 16, 3), dtype=np.uint8)
              for i in range(40)]
    labels = ["dark" if i % 2 else "bright" for i in range(40)]
    model = headstart.fit(images, labels, backbone="raw-pixels", progress=False, baseline=False)
    assert model.label_names == ["bright", "dark"]
    assert model.predict(images[:4]) == labels[:4]


def test_evaluate_is_the_function_after_every_subpackage_is_imported() -> None:
    import importlib
    import pkgutil

    for mod in pkgutil.walk_packages(headstart.__path__, "headstart."):
        if not mod.name.startswith(("headstart.cli", "headstart.serve", "headstart.__main__")):
            importlib.import_module(mod.name)
    assert callable(headstart.evaluate) and headstart.evaluate.__module__ == "headstart.api"
    assert callable(headstart.fit) and callable(headstart.load)


def test_data_with_too_few_distinct_items_for_a_test_split_is_refused_before_training() -> None:
    import numpy as np

    import headstart
    from headstart.errors import DataError

    a, b = np.zeros((8, 8), np.uint8), np.full((8, 8), 255, np.uint8)
    items = [a] * 20 + [b] * 20  # copies share a split, so two distinct items fill at most two splits
    with pytest.raises(DataError, match="no item is left for the test split") as err:
        headstart.fit(items, labels=["dark"] * 20 + ["light"] * 20, backbone="raw-pixels", progress=False,
                      baseline=False)
    assert "2 distinct item(s) among 40" in str(err.value) and "--split-column" in str(err.value)


@pytest.mark.slow
def test_fit_without_log_reports_its_steps_to_the_headstart_logger(caplog) -> None:
    import logging

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (8, 8), dtype=np.uint8) for _ in range(40)]
    with caplog.at_level(logging.INFO, logger="headstart"):
        headstart.fit(images, ["a", "b"] * 20, backbone="raw-pixels", progress=False, baseline=False,
                      options={"Cs": "1"})
    said = [r.getMessage() for r in caplog.records if r.name == "headstart"]
    assert any(m.startswith("Data: 40 images, 2 classes") for m in said)
