"""Outliers in check --deep: are real photos hidden among MNIST digits found?

MNIST-5000 (``builtin:mnist:500``, efficientnet-lite0, warm feature cache) plus 20 photos of
``skimage.data`` made to look like MNIST items (28 x 28 grey) and given random digit labels. The
outlier score of ``headstart check --deep`` (squared Mahalanobis distance to the nearest class mean
on the probe's inputs, flagged above a robust z-score of 3.5) on all 5020 items.

    scripts/offline .venv/bin/python bench/quality_outliers.py    # -> bench/results/quality_outliers.md
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skd

from headstart.backbones import create_backbone
from headstart.data import load_data
from headstart.data.dataset import Dataset
from headstart.features import extract_features_many
from headstart.quality import OUTLIER_Z, outlier_scores
from headstart.quality.probe import probe_inputs

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page", "text", "horse", "brick",
          "grass", "gravel", "clock", "hubble_deep_field", "retina", "immunohistochemistry", "colorwheel",
          "binary_blobs", "cat")


def grey28(name: str) -> np.ndarray:
    a = getattr(skd, name)()
    a = a if a.dtype == np.uint8 else (np.asarray(a, dtype=np.float64) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(a).convert("L").resize((28, 28)))


def main() -> None:
    digits = load_data("builtin:mnist:500")
    photos = Dataset("image", [grey28(n) for n in PHOTOS], None, list(PHOTOS))
    fd, fp = extract_features_many(create_backbone("efficientnet-lite0"), [digits, photos], progress=False)
    names = digits.label_names
    y = np.array([names.index(v) for v in digits.labels] + np.random.default_rng(0).integers(0, 10, len(PHOTOS)).tolist())
    _, z = outlier_scores(probe_inputs(np.concatenate([fd, fp])), y)
    n = len(fd)
    rank = np.argsort(np.argsort(-z))
    flagged_photos, flagged_digits = int((z[n:] > OUTLIER_Z).sum()), int((z[:n] > OUTLIER_Z).sum())
    text = ("| items | photos flagged | digits flagged | photos' ranks by score (0 = most outlying) |\n|---|---|---|---|\n"
            f"| {n} digits + {len(PHOTOS)} photos | {flagged_photos} of {len(PHOTOS)} | {flagged_digits} of {n} "
            f"({100 * flagged_digits / n:.1f}%) | {', '.join(str(r) for r in sorted(rank[n:].tolist()))} |\n")
    out = Path(__file__).parent / "results" / "quality_outliers.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
