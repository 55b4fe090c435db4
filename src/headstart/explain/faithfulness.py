"""Measures of whether an attribution is faithful to the model, not just plausible to a reader.

- Images, deletion / insertion (Petsiuk et al., RISE): remove (or reveal) the image in attribution
  order, cell by cell on a grid, and follow the class probability; the area under that curve should
  be low for deletion and high for insertion, compared with a random order.
- Texts, comprehensiveness / sufficiency (DeYoung et al., ERASER): the probability lost when the
  top-k% words are removed (higher = better) and when only they are kept (lower = better),
  averaged over k.
- Sanity (Adebayo et al.): re-draw the head's weights, then also the top backbone block's; an
  attribution that still ranks the inputs as before does not depend on what the model learned.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from .base import Prepared, Subject
from .image import cell_mask, removed

CURVE_GRID = 14  # deletion / insertion remove the image in cells of a 14 x 14 grid (16 px at 224 px)
FRACTIONS = (0.1, 0.2, 0.5)  # ERASER's middle bins; 1% and 5% of a short text round to the same word


def order_of(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices from the highest score down; ties (Grad-CAM's zeros) in random order, not raster order."""
    flat = scores.reshape(-1)
    return np.lexsort((rng.random(flat.size), -flat))


def deletion_insertion(subject: Subject, prep: Prepared, targets: np.ndarray, scores: Sequence[np.ndarray],
                       *, steps: int = 10, seed: int = 0, batch_size: int = 64,
                       grid: int | None = CURVE_GRID) -> tuple[np.ndarray, np.ndarray]:
    """Per item, the area under the target-probability curve while the top of the image is removed
    (deletion) and while it is revealed on the blurred image (insertion), over ``steps`` equal
    fractions of it.

    With ``grid``, the image is removed cell by cell on a ``grid`` x ``grid`` partition, in the order
    of the attribution averaged per cell; with ``grid=None``, pixel by pixel. Cells make every order's
    removals the same shape (blocks), so the curves compare *where* each order removes. Pixel by
    pixel, a scattered order (random, or a fine-grained map) turns the image into salt-and-pepper
    noise that no natural image has, and a smooth map keeps it natural: the curves then reward the
    shape of the removal instead of its place."""
    assert prep.x is not None
    rng = np.random.default_rng(seed)
    side = prep.x.shape[-1]
    cells = cell_mask(side, grid) if grid else torch.arange(side * side).reshape(side, side)
    units = int(cells.max()) + 1
    fractions = np.linspace(0, 1, steps + 1)
    dele, ins = np.zeros(len(prep)), np.zeros(len(prep))
    for i in range(len(prep)):
        x = prep.x[i:i + 1]
        blur = removed(x)
        unit_scores = pooled(scores[i], cells, units)
        order = torch.from_numpy(order_of(unit_scores, rng))
        rank = torch.empty(units, dtype=torch.long)
        rank[order] = torch.arange(units)
        rank = rank[cells].reshape(1, 1, *x.shape[-2:])
        inner = fractions[1:-1]  # both curves start and end at the image and the blurred image
        masks = torch.stack([(rank < int(round(f * units))) for f in inner]).float()[:, 0]  # [F - 2, 1, H, W]
        deleted = x * (1 - masks) + blur * masks
        inserted = blur * (1 - masks) + x * masks
        p = subject.image_proba(torch.cat([x, blur, deleted, inserted]), batch_size)[:, int(targets[i])]
        k = len(inner)
        dele[i] = _area(np.concatenate([p[:1], p[2:2 + k], p[1:2]]), fractions)
        ins[i] = _area(np.concatenate([p[1:2], p[2 + k:], p[:1]]), fractions)
    return dele, ins


def pooled(scores: np.ndarray, cells: torch.Tensor, units: int) -> np.ndarray:
    """The mean score of each cell (``cells``: the cell index of every pixel)."""
    flat = torch.as_tensor(np.asarray(scores, dtype=np.float64)).reshape(-1)
    idx = cells.reshape(-1)
    total = torch.zeros(units, dtype=torch.float64).index_add_(0, idx, flat)
    count = torch.zeros(units, dtype=torch.float64).index_add_(0, idx, torch.ones_like(flat))
    return (total / count.clamp_min(1)).numpy()


def _area(y: np.ndarray, x: np.ndarray) -> float:
    return float(((y[1:] + y[:-1]) / 2 * np.diff(x)).sum())  # the trapezoid rule


def comprehensiveness_sufficiency(subject: Subject, prep: Prepared, targets: np.ndarray,
                                  scores: Sequence[np.ndarray], *, fractions: Sequence[float] = FRACTIONS,
                                  seed: int = 0, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Per text, the mean over ``fractions`` of p(full) - p(without the top words) (comprehensiveness)
    and p(full) - p(only the top words) (sufficiency). The full text is the words the model reads."""
    rng = np.random.default_rng(seed)
    texts, owners = [], []
    for i in range(len(prep)):
        n = len(prep.spans[i])
        order = order_of(scores[i], rng) if n else np.zeros(0, int)
        texts.append(prep.text_from(i, np.ones(n, bool)))
        for f in fractions:
            keep_top = np.zeros(n, bool)
            keep_top[order[:max(1, int(round(f * n)))]] = True
            texts += [prep.text_from(i, ~keep_top), prep.text_from(i, keep_top)]
        owners.append(len(texts))
    proba = subject.text_proba(texts, batch_size)
    comp, suff = np.zeros(len(prep)), np.zeros(len(prep))
    start = 0
    for i, end in enumerate(owners):
        p = proba[start:end, int(targets[i])]
        comp[i] = float(np.mean(p[0] - p[1::2]))
        suff[i] = float(np.mean(p[0] - p[2::2]))
        start = end
    return comp, suff


def random_scores(prep: Prepared, seed: int) -> list[np.ndarray]:
    """The reference every method must beat: scores in random order."""
    rng = np.random.default_rng(seed)
    if prep.modality == "image":
        assert prep.x is not None
        return [rng.random(prep.x.shape[-2:]).astype(np.float32) for _ in range(len(prep))]
    return [rng.random(len(s)).astype(np.float32) for s in prep.spans]


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two attributions of the same item (0 when either is constant)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def randomised(subject: Subject, *, backbone_top: bool, probe: dict[str, torch.Tensor] | None = None,
               seed: int = 0) -> Subject:
    """A copy of ``subject`` whose head (and, with ``backbone_top``, the backbone's top parameter
    group) has every weight re-drawn from a normal with the tensor's own mean and spread.

    The top group is the last one that changes the features of ``probe`` (inputs for the backbone):
    a Hugging Face encoder's last group can be a pooler that mean pooling never uses."""
    gen = torch.Generator().manual_seed(seed)
    head = copy.deepcopy(subject.head)
    _redraw(list(head.parameters()), gen)
    backbone = subject.backbone
    if backbone_top:
        backbone = copy.deepcopy(subject.backbone)
        with torch.no_grad():
            before = backbone(**probe) if probe is not None else None
            for group in reversed(backbone.param_groups()):
                _redraw(group, gen)
                if before is None or not torch.allclose(backbone(**probe), before):  # type: ignore[arg-type]
                    break
    return Subject(backbone, head)


def _redraw(params: list[torch.nn.Parameter], gen: torch.Generator) -> None:
    with torch.no_grad():
        for p in params:
            mean = p.float().mean()
            std = p.float().std() if p.numel() > 1 else torch.tensor(0.02)
            p.copy_(torch.randn(p.shape, generator=gen).to(p.device) * std.clamp_min(1e-3) + mean)
