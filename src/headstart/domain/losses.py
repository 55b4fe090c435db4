"""Alignment losses for unsupervised domain adaptation, one ``nn.Module`` each, one contract.

Every aligner is called as ``aligner(f_s, f_t, logits_s, logits_t) -> scalar loss`` on a source
batch and a target batch (features of the layer being aligned, and the classifier's logits). The
training loop adds ``trade_off * loss`` to the source cross-entropy and calls
``aligner.set_progress(p)`` with the fraction of training done (``p`` in [0, 1]); adversarial
aligners use it to ramp the gradient-reversal strength, as in Ganin et al.

Methods (formulas from the papers; the TLlib library was read for conventions, not copied):
- ``dann``: domain discriminator behind a gradient-reversal layer (Ganin et al., JMLR 2016).
- ``cdan``: the discriminator sees features conditioned on the classifier's predictions, through
  the multilinear map f (x) g (randomised when that is large), with entropy weighting
  (Long et al., NeurIPS 2018, CDAN+E).
- ``coral``: match means and covariances of the two feature batches (deep CORAL, Sun & Saenko 2016).
- ``mmd``: multi-kernel maximum mean discrepancy with a family of Gaussian kernels (DAN, Long et
  al., ICML 2015).
- ``mcc``: minimum class confusion on target predictions (Jin et al., ECCV 2020); needs no
  discriminator and is often the strongest on small data.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import Registry


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coeff: float) -> torch.Tensor:  # type: ignore[override]
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.coeff * grad, None


def reverse_gradient(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """Identity forward; multiplies the gradient by ``-coeff`` backward."""
    return _ReverseGrad.apply(x, coeff)


def grl_coefficient(progress: float, alpha: float = 10.0) -> float:
    """Ganin et al.'s ramp 2 / (1 + exp(-alpha p)) - 1: 0 at the start, ~1 at the end, so the
    discriminator's noisy early gradients do not wreck the features."""
    return 2.0 / (1.0 + math.exp(-alpha * progress)) - 1.0


class Aligner(nn.Module):
    """Base class: ``forward(f_s, f_t, logits_s, logits_t)`` returns a scalar loss."""

    def __init__(self) -> None:
        super().__init__()
        self.progress = 0.0

    def set_progress(self, progress: float) -> None:
        self.progress = float(min(max(progress, 0.0), 1.0))


def _discriminator(in_features: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden, 1))


class DANN(Aligner):
    def __init__(self, feature_dim: int, num_classes: int, hidden: int = 256) -> None:
        super().__init__()
        self.discriminator = _discriminator(feature_dim, hidden)

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, logits_s: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
        f = reverse_gradient(torch.cat([f_s, f_t]), grl_coefficient(self.progress))
        d = self.discriminator(f).squeeze(1)
        domain = torch.cat([torch.ones(len(f_s)), torch.zeros(len(f_t))]).to(d)
        return F.binary_cross_entropy_with_logits(d, domain)


class CDAN(Aligner):
    """CDAN+E. Above ``max_dim`` the outer product f (x) g is replaced by the randomised
    multilinear map (R_f f) * (R_g g) / sqrt(max_dim) with fixed Gaussian R_f, R_g (the paper's
    Theorem 1 keeps the inner products in expectation)."""

    def __init__(self, feature_dim: int, num_classes: int, hidden: int = 256, max_dim: int = 1024,
                 entropy: bool = True) -> None:
        super().__init__()
        self.entropy = entropy
        self.randomised = feature_dim * num_classes > max_dim
        if self.randomised:
            g = torch.Generator().manual_seed(0)
            # buffers: they travel with the module across devices and into checkpoints
            self.register_buffer("rf", torch.randn(feature_dim, max_dim, generator=g))
            self.register_buffer("rg", torch.randn(num_classes, max_dim, generator=g))
            width = max_dim
        else:
            width = feature_dim * num_classes
        self.discriminator = _discriminator(width, hidden)

    def _map(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.randomised:
            return (f @ self.rf) * (g @ self.rg) / math.sqrt(self.rf.shape[1])
        return torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, logits_s: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
        f = torch.cat([f_s, f_t])
        # The prediction conditions the discriminator but is not trained through it (as in the paper's code).
        g = F.softmax(torch.cat([logits_s, logits_t]).float(), dim=1).detach().to(f.dtype)
        h = reverse_gradient(self._map(f, g), grl_coefficient(self.progress))
        d = self.discriminator(h).squeeze(1)
        domain = torch.cat([torch.ones(len(f_s)), torch.zeros(len(f_t))]).to(d)
        if not self.entropy:
            return F.binary_cross_entropy_with_logits(d, domain)
        # +E: confident (low-entropy) examples count more; each domain's weights sum to its size.
        ent = -(g * torch.log(g + 1e-6)).sum(1)
        w = 1.0 + torch.exp(-ent)
        ns = len(f_s)
        w = torch.cat([w[:ns] / w[:ns].sum() * ns, w[ns:] / w[ns:].sum() * (len(w) - ns)]).detach()
        return (w * F.binary_cross_entropy_with_logits(d, domain, reduction="none")).mean()


class CORAL(Aligner):
    def __init__(self, feature_dim: int, num_classes: int) -> None:
        super().__init__()

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, logits_s: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
        f_s, f_t = f_s.float(), f_t.float()
        mean_s, mean_t = f_s.mean(0, keepdim=True), f_t.mean(0, keepdim=True)
        cov_s = (f_s - mean_s).T @ (f_s - mean_s) / max(len(f_s) - 1, 1)
        cov_t = (f_t - mean_t).T @ (f_t - mean_t) / max(len(f_t) - 1, 1)
        return (mean_s - mean_t).pow(2).mean() + (cov_s - cov_t).pow(2).mean()


class MMD(Aligner):
    """Multi-kernel MMD^2 (biased estimate, always >= 0) with Gaussian kernels whose bandwidths are
    the batch's mean squared distance times ``2 ** k`` for k in ``scales``."""

    def __init__(self, feature_dim: int, num_classes: int, scales: tuple[int, ...] = (-2, -1, 0, 1, 2)) -> None:
        super().__init__()
        self.scales = scales

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, logits_s: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
        return mk_mmd2(f_s.float(), f_t.float(), self.scales)


def mk_mmd2(x: torch.Tensor, y: torch.Tensor, scales: tuple[int, ...] = (-2, -1, 0, 1, 2)) -> torch.Tensor:
    z = torch.cat([x, y])
    d2 = torch.cdist(z, z).pow(2)
    base = d2.detach().sum() / max(len(z) * (len(z) - 1), 1)
    k = sum(torch.exp(-d2 / (base * 2.0**s + 1e-12)) for s in scales) / len(scales)
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()  # type: ignore[index]


class MCC(Aligner):
    def __init__(self, feature_dim: int, num_classes: int, temperature: float = 2.5) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, logits_s: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
        p = F.softmax(logits_t.float() / self.temperature, dim=1)
        n, k = p.shape
        ent = -(p * torch.log(p + 1e-5)).sum(1).detach()
        w = 1.0 + torch.exp(-ent)
        w = (n * w / w.sum()).unsqueeze(1)
        confusion = (p * w).T @ p  # k x k class-correlation matrix
        confusion = confusion / confusion.sum(1, keepdim=True)
        return (confusion.sum() - torch.trace(confusion)) / k


ALIGNERS: Registry[type[Aligner]] = Registry("adaptation method", ConfigError)
ALIGNERS.register("dann", DANN)
ALIGNERS.register("cdan", CDAN)
ALIGNERS.register("coral", CORAL)
ALIGNERS.register("mmd", MMD)
ALIGNERS.register("mcc", MCC)

# Default weight of the alignment term (what the papers and TLlib's scripts use on Office-31-like
# data: 1 for the adversarial and MCC losses; CORAL / MMD are smaller in scale, so they get more).
TRADE_OFF = {"dann": 1.0, "cdan": 1.0, "coral": 10.0, "mmd": 1.0, "mcc": 1.0}


def build_aligner(name: str, feature_dim: int, num_classes: int) -> Aligner:
    return ALIGNERS.get(name)(feature_dim, num_classes)
