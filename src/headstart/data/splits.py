"""Deterministic, seeded, stratified train / val / test splits that never split a duplicate group."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DataError
from .dataset import Dataset


@dataclass(frozen=True)
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def split(data: Dataset, *, val: float = 0.15, test: float = 0.2, seed: int = 0) -> Splits:
    """Use the data's own splits when it has them; otherwise split it here.

    Given only train/test, ``val`` is carved out of train. Our own split is stratified by class and
    groups exact duplicates (same content hash) so that a copy never lands on both sides.
    """
    for name, frac in (("val", val), ("test", test)):
        if not 0.0 <= frac < 1.0:
            raise ConfigError(f"`{name}` must be in [0, 1), got {frac}.")
    if val + test >= 0.9:
        raise ConfigError(f"`val` + `test` must leave at least 10% for training, got {val + test:.2f}.")
    if data.labels is None:
        raise DataError(f"{data.source}: cannot split data without labels.")
    given = data.splits
    if given is not None and set(given) >= {"train"}:
        idx = {s: [i for i, v in enumerate(given) if v == s] for s in ("train", "val", "test")}
        if not idx["test"]:
            raise DataError(f"{data.source}: the split column/folders name no test items.",
                            fix="add a test split, or remove the split column to let headstart split.")
        train = data.subset(idx["train"], "train")
        if not idx["val"]:  # carve validation out of the user's training part
            parts = _assign(train, {"val": val / (1 - test) if test < 1 else val}, seed)
            return Splits(train.subset(parts["train"], "train"), train.subset(parts["val"], "val"),
                          data.subset(idx["test"], "test"))
        return Splits(train, data.subset(idx["val"], "val"), data.subset(idx["test"], "test"))
    parts = _assign(data, {"val": val, "test": test}, seed)
    return Splits(*(data.subset(parts[s], s) for s in ("train", "val", "test")))


def _assign(data: Dataset, fractions: dict[str, float], seed: int) -> dict[str, list[int]]:
    """Per class: shuffle duplicate groups (seeded) and deal them out to the splits."""
    assert data.labels is not None
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(data.content_hashes()):
        groups[h].append(i)
    by_class: dict[str, list[list[int]]] = defaultdict(list)
    for members in groups.values():  # dict order = first occurrence order: deterministic
        by_class[data.labels[members[0]]].append(members)
    out: dict[str, list[int]] = {"train": [], **{k: [] for k in fractions}}
    for label in sorted(by_class):
        class_groups = by_class[label]
        order = rng.permutation(len(class_groups))
        n = len(class_groups)
        start = 0
        for name, frac in fractions.items():
            # At least one per split once a class has enough groups for every split and for training.
            k = int(round(frac * n))
            if frac > 0 and k == 0 and n >= len(fractions) + 1:
                k = 1
            k = min(k, n - start - 1)  # always leave one for training
            for g in order[start:start + max(k, 0)]:
                out[name] += class_groups[g]
            start += max(k, 0)
        for g in order[start:]:
            out["train"] += class_groups[g]
    return {k: sorted(v) for k, v in out.items()}
