"""Baselines that need no pre-trained network, so that the transfer gain is a number.

Images: logistic regression on raw pixels (32 x 32 RGB, the same probe and the same C sweep as the
transfer model). Text: TF-IDF (word 1-2 grams) + logistic regression with C chosen on val.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.dataset import Dataset

PIXEL_SIZE = 32


def raw_pixels(data: Dataset, size: int = PIXEL_SIZE, grey: bool = False) -> np.ndarray:
    from PIL import Image

    channels = 1 if grey else 3
    out = np.empty((len(data), size * size * channels), dtype=np.float32)
    for i in range(len(data)):
        img = data.load(i).resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(img.convert("L") if grey else img, dtype=np.float32).reshape(-1) / 255.0
    return out


def _is_grey(data: Dataset, n: int = 32) -> bool:
    """True when sampled images have R == G == B: then one channel carries all the information."""
    for i in range(min(n, len(data))):
        a = np.asarray(data.load(i), dtype=np.int16)
        if np.abs(a[..., 0] - a[..., 1]).max() or np.abs(a[..., 1] - a[..., 2]).max():
            return False
    return True


def baseline_proba(train: Dataset, val: Dataset, test: Dataset, y_train: np.ndarray, y_val: np.ndarray,
                   num_classes: int, *, seed: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """Test-set probabilities of the modality's baseline, and what it was."""
    if train.modality == "image":
        from ..train.linear_probe import LinearProbeConfig, linear_probe
        import torch

        grey = _is_grey(train)
        head, info = linear_probe(raw_pixels(train, grey=grey), y_train, raw_pixels(val, grey=grey), y_val,
                                  num_classes, LinearProbeConfig(Cs=tuple(np.logspace(-4, 4, 9))), seed=seed)
        with torch.no_grad():
            logits = head(torch.as_tensor(raw_pixels(test, grey=grey)))
        kind = "greyscale" if grey else "RGB"
        return logits.softmax(1).numpy(), {"name": f"logistic regression on raw {PIXEL_SIZE}x{PIXEL_SIZE} {kind} pixels",
                                           "C": info["C"], **({"warnings": info["warnings"]} if "warnings" in info else {})}
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2 if len(train) >= 50 else 1, sublinear_tf=True)
    xtr = vec.fit_transform(train.items)
    xva = vec.transform(val.items)
    best = (-1.0, 1.0)
    for C in (0.1, 1.0, 10.0, 100.0):
        model = LogisticRegression(C=C, max_iter=2000).fit(xtr, y_train)
        acc = float((model.predict(xva) == y_val).mean()) if len(y_val) else 0.0
        if acc > best[0]:
            best = (acc, C)
    model = LogisticRegression(C=best[1], max_iter=2000).fit(xtr, y_train)
    proba = np.zeros((len(test), num_classes))
    proba[:, model.classes_] = model.predict_proba(vec.transform(test.items))
    return proba, {"name": "TF-IDF (1-2 grams) + logistic regression", "C": best[1]}
