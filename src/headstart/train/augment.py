"""Training-time input transforms without torchvision: PIL crops and jitter, mixup / cutmix, text buckets."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance


def random_resized_crop(img: Image.Image, rng: random.Random, scale: tuple[float, float] = (0.6, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Image.Image:
    """Crop a random area (fraction ``scale``, aspect ``ratio``) of the image; resizing happens later."""
    w, h = img.size
    for _ in range(10):
        area = w * h * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return img.crop((left, top, left + cw, top + ch))
    return img


def augment_image(img: Image.Image, rng: random.Random, flip: bool, jitter: float = 0.2) -> Image.Image:
    img = random_resized_crop(img.convert("RGB"), rng)
    if flip and rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhancer(img).enhance(rng.uniform(1 - jitter, 1 + jitter))
    return img


def mix_batch(pixels: torch.Tensor, labels: torch.Tensor, mixup: float, cutmix: float,
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mixup (Zhang et al.) or CutMix (Yun et al.), chosen at random when both are on.

    Returns the mixed pixels, both label sets and the weight of the first: the loss is
    ``lam * CE(y_a) + (1 - lam) * CE(y_b)``.
    """
    perm = torch.randperm(pixels.shape[0], generator=gen).to(pixels.device)
    use_cutmix = cutmix > 0 and (mixup <= 0 or torch.rand(1, generator=gen).item() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = float(np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=gen))).beta(alpha, alpha))
    if use_cutmix:
        h, w = pixels.shape[-2:]
        ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(torch.randint(0, h, (1,), generator=gen)), int(torch.randint(0, w, (1,), generator=gen))
        y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
        pixels = pixels.clone()
        pixels[..., y0:y1, x0:x1] = pixels[perm][..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        pixels = lam * pixels + (1 - lam) * pixels[perm]
    return pixels, labels, labels[perm], lam


def length_bucketed_batches(lengths: Sequence[int], batch_size: int, rng: random.Random,
                            bucket: int = 50) -> Iterator[list[int]]:
    """Shuffle, sort by length inside windows of ``bucket`` batches, then shuffle the batches:
    batches of similar lengths (little padding) in a random order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    window = batch_size * bucket
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    yield from batches
