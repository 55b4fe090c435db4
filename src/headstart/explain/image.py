"""Image attributions over input pixels: Grad-CAM, Integrated Gradients (both Captum, gradients),
occlusion of square patches and KernelSHAP over a grid of cells (both Captum, model-agnostic: they
only run the model)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.base import Backbone
from .base import Prepared, Settings, Subject


def last_conv(backbone: Backbone) -> nn.Conv2d | None:
    """The last convolution of a convolutional backbone, or None. A network with a single
    convolution (a vision transformer's patch embedding) has no late convolutional stage."""
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if len(convs) > 1 else None


# Grad-CAM weighs the maps of the last convolution that still keeps 1/CAM_STRIDE of the image's
# side (28 x 28 maps at 224 px, 8 x 8 at 64 px). EfficientNet-Lite's very last convolution is at
# 1/32 (7 x 7 at 224 px, 2 x 2 at 64 px): on MNIST it deleted worse than a random order at 64 px,
# where the finer layer beat random on both curves (bench/explain_faithfulness.py, docs/benchmarks.md).
CAM_STRIDE = 8


def cam_layer(backbone: Backbone, x: torch.Tensor) -> nn.Conv2d:
    """Grad-CAM's layer for inputs shaped like ``x``: the last convolution, in the order the forward
    pass runs them, whose maps are at least 1/``CAM_STRIDE`` of the input's side."""
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    ran: list[tuple[nn.Conv2d, int]] = []
    hooks = [c.register_forward_hook(lambda m, _, out: ran.append((m, int(out.shape[-1])))) for c in convs]
    try:
        with torch.no_grad():
            backbone(pixel_values=x[:1])
    finally:
        for h in hooks:
            h.remove()
    side = int(x.shape[-1])
    wide = [m for m, s in ran if s * CAM_STRIDE >= side] or [max(ran, key=lambda r: r[1])[0]]
    return wide[-1]


def removed(x: torch.Tensor) -> torch.Tensor:
    """What a removed pixel becomes: a heavy blur of the same image (the image squeezed to 1/32 of
    its side and stretched back). It keeps the colours, so removing pixels does not add edges."""
    size = max(2, x.shape[-1] // 32)
    small = F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)


def black(subject: Subject, like: torch.Tensor) -> torch.Tensor:
    """A black image, normalised as the backbone normalises its inputs."""
    from ..backbones.base import normalise

    zeros = torch.zeros((1, like.shape[-2], like.shape[-1], 3), dtype=torch.uint8)
    return normalise(zeros, subject.backbone.card.input).expand_as(like).contiguous()


def _batches(prep: Prepared, settings: Settings):  # type: ignore[no-untyped-def]
    assert prep.x is not None
    for i in range(0, len(prep), settings.batch_size):
        yield i, prep.x[i:i + settings.batch_size]


def grad_cam(subject: Subject, prep: Prepared, targets: np.ndarray, settings: Settings,
             layer: nn.Module | None = None) -> list[np.ndarray]:
    from captum.attr import LayerAttribution, LayerGradCam

    assert prep.x is not None
    if layer is None:
        layer = cam_layer(subject.backbone, prep.x.to(subject.device))
    cam = LayerGradCam(subject.image_logits, layer)
    out: list[np.ndarray] = []
    for i, x in _batches(prep, settings):
        x = x.to(subject.device)
        with torch.enable_grad():
            a = cam.attribute(x, target=targets[i:i + len(x)].tolist(), relu_attributions=True)
        a = LayerAttribution.interpolate(a.detach(), tuple(x.shape[-2:]), "bilinear")
        out += list(a[:, 0].cpu().numpy().astype(np.float32))
    return out


def integrated_gradients(subject: Subject, prep: Prepared, targets: np.ndarray,
                         settings: Settings) -> list[np.ndarray]:
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(subject.image_logits)
    out: list[np.ndarray] = []
    for i, x in _batches(prep, settings):
        x = x.to(subject.device)
        with torch.enable_grad():
            a = ig.attribute(x, baselines=black(subject, x).to(subject.device), target=targets[i:i + len(x)].tolist(),
                             n_steps=settings.steps, internal_batch_size=settings.batch_size)
        out += list(a.detach().sum(1).cpu().numpy().astype(np.float32))
    return out


def cell_mask(size: int, grid: int) -> torch.Tensor:
    """``[size, size]`` cell index of every pixel on a ``grid`` x ``grid`` partition."""
    idx = torch.arange(size) * grid // size
    return idx[:, None] * grid + idx[None, :]


def kernel_shap_image(subject: Subject, prep: Prepared, targets: np.ndarray, settings: Settings) -> list[np.ndarray]:
    from captum.attr import KernelShap

    assert prep.x is not None

    def proba(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return subject.image_logits(x).softmax(1)

    shap = KernelShap(proba)
    size = prep.x.shape[-1]
    mask = cell_mask(size, settings.grid).to(subject.device)[None, None].expand(1, 3, size, size)
    out: list[np.ndarray] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        for i in range(len(prep)):
            x = prep.x[i:i + 1].to(subject.device)
            a = shap.attribute(x, baselines=removed(x), target=int(targets[i]), feature_mask=mask,
                               n_samples=settings.samples, perturbations_per_eval=settings.batch_size)
            out.append(a[0, 0].detach().cpu().numpy().astype(np.float32))
    return out


def occlusion_patch(size: int, grid: int) -> int:
    """The side in pixels of occlusion's patches on a ``size`` px image: 1/``grid`` of the side,
    rounded up (16 px at 224 px with the default 14, the cell the deletion / insertion curves remove)."""
    return max(1, -(-size // grid))


def occlusion(subject: Subject, prep: Prepared, targets: np.ndarray, settings: Settings) -> list[np.ndarray]:
    """How much the target class's log-probability falls when a square patch of the image is
    replaced by the blurred image (:func:`removed`, what the faithfulness curves remove to), patch by
    patch on a ``settings.occlusion_grid`` x ``occlusion_grid`` grid of non-overlapping patches.

    Cost: ``occlusion_grid ** 2 + 1`` forward passes per image (197 at the default 14; fewer where the
    side does not divide evenly and the last patch of a row is cut short), run
    ``settings.batch_size`` occluded images at a time; no gradients. The log-probability, not the
    probability, so that a confident prediction's patches are still told apart."""
    from captum.attr import Occlusion

    assert prep.x is not None
    model = Subject(subject.backbone.for_inference(), subject.head)  # only runs the model: the faster form

    def log_proba(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.image_logits(x).log_softmax(1)

    occ = Occlusion(log_proba)
    side = occlusion_patch(int(prep.x.shape[-1]), settings.occlusion_grid)
    out: list[np.ndarray] = []
    for i in range(len(prep)):
        x = prep.x[i:i + 1].to(subject.device)
        a = occ.attribute(x, sliding_window_shapes=(3, side, side), strides=(3, side, side), baselines=removed(x),
                          target=int(targets[i]), perturbations_per_eval=settings.batch_size)
        out.append(a[0, 0].detach().cpu().numpy().astype(np.float32))
    return out
