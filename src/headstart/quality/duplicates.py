"""Near-duplicates by the cosine similarity of frozen features, within a set and across two sets.

Exact duplicates share a content hash (``headstart check`` finds them without a model); a resaved
JPEG, a cropped border or a lightly edited article does not, but its features barely move. The
features are centred on their mean first: pooled ReLU features all point into one orthant, so raw
cosines crowd near 1 (the median nearest-neighbour cosine of MNIST-5000 on efficientnet-lite0 is
0.94 raw, 0.76 centred).

Thresholds measured on real data (docs/concepts/data-quality.md): on MNIST-5000 (efficientnet-lite0)
no two different digits reach a centred cosine of 0.978, while a copy with a 1-pixel border cropped
scores 0.999; on BBC News (minilm-l6) pairs at 0.97-0.98 are the same article lightly re-edited and
pairs at 0.95-0.97 are different articles on one story.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

__all__ = ["DEFAULT_THRESHOLDS", "Pair", "near_duplicates"]

DEFAULT_THRESHOLDS = {"image": 0.98, "text": 0.97, "features": 0.98}
_CHUNK = 1024


@dataclass(frozen=True)
class Pair:
    first: int
    second: int
    similarity: float


def _unit(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    z = np.asarray(x, dtype=np.float32) - mean
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def near_duplicates(features: np.ndarray, *, other: np.ndarray | None = None, threshold: float = 0.98
                    ) -> list[Pair]:
    """Pairs with centred cosine >= ``threshold``, most similar first.

    Without ``other``: pairs ``i < j`` within ``features``. With ``other``: pairs ``(i, j)`` of a row
    ``i`` of ``features`` and a row ``j`` of ``other`` (e.g. train and test: leakage). Both are
    centred on the mean of ``features``, so the two calls measure on one scale.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ConfigError(f"`threshold` must be a cosine similarity between -1 and 1, got {threshold!r}.")
    x = np.asarray(features, dtype=np.float32)
    if len(x) == 0:
        return []
    mean = x.mean(0)
    a = _unit(x, mean)
    b = a if other is None else _unit(other, mean)
    pairs: list[Pair] = []
    for start in range(0, len(a), _CHUNK):
        first = start if other is None else 0  # within one set only the upper triangle is needed
        block = a[start:start + _CHUNK] @ b[first:].T
        rows, cols = np.nonzero(block >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist()):
            i, j = start + r, first + c
            if other is None and j <= i:
                continue
            pairs.append(Pair(i, j, float(min(block[r, c], 1.0))))
    pairs.sort(key=lambda p: (-p.similarity, p.first, p.second))
    return pairs
