"""ConSE zero-shot on real skimage photos, against chance.

The class names are what a user would type; no labelled example is used. The same head is what
``headstart fit --strategy zero-shot`` builds for images.

    python bench/conse_photos.py
"""

from __future__ import annotations

import numpy as np
import torch
from skimage import data as skd

from headstart.backbones import create_backbone
from headstart.data import load_data
from headstart.features import extract_features
from headstart.methods.zero_shot import conse_head

PHOTOS = {"cat": skd.chelsea, "coffee": skd.coffee, "rocket": skd.rocket, "astronaut": skd.astronaut,
          "horse": skd.horse, "camera": skd.camera, "motorcycle": getattr(skd, "motorcycle_left", None),
          "coins": skd.coins}


def main() -> None:
    photos = {k: f() for k, f in PHOTOS.items() if f is not None}
    names = list(photos)
    images = [np.stack([p] * 3, -1) if p.ndim == 2 else p[..., :3] for p in photos.values()]
    images = [(im * 255).astype(np.uint8) if im.dtype != np.uint8 else im for im in images]
    image_bb, text_bb = create_backbone("efficientnet-lite0"), create_backbone("minilm-l6")
    head = conse_head(image_bb, names, text_bb)
    feats = extract_features(image_bb, load_data(images, modality="image"), use_cache=False, progress=False)
    pred = head(torch.as_tensor(feats)).argmax(1).tolist()
    for truth, p in zip(names, pred):
        print(f"{truth:>11} -> {names[p]}")
    acc = float(np.mean([p == i for i, p in enumerate(pred)]))
    print(f"ConSE accuracy {acc:.3f} on {len(names)} photos; chance {1 / len(names):.3f}")


if __name__ == "__main__":
    main()
