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
