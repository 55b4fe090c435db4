"""The training loss as a sum of small terms, each a module that reads one step's outputs.

``train`` builds the list once from the config (:func:`loss_terms`) and adds the terms up on every
step, so a new regulariser is one class here and one line in :func:`loss_terms`, not another branch
in the loop. A term sees a :class:`StepOutput`: the logits, the labels (two sets and a weight when
the batch was mixed), the pooled features and, under domain adaptation, the aligner's loss.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import FineTuneConfig

__all__ = ["BatchSpectralShrinkage", "CrossEntropy", "DomainAlignment", "L2SP", "LossTerm", "StepOutput",
           "batch_spectral_shrinkage", "loss_terms", "total_loss"]


@dataclass
class StepOutput:
    """What the model produced for one training batch."""

    logits: torch.Tensor
    labels: torch.Tensor
    features: torch.Tensor | None = None  # pooled backbone features (None under domain adaptation)
    mixed_labels: torch.Tensor | None = None  # mixup / CutMix: the partner's labels ...
    mix_weight: float = 1.0  # ... and the weight of ``labels``
    alignment: torch.Tensor | None = None  # the aligner's loss on this source + target batch


class LossTerm(nn.Module, abc.ABC):
    """One additive part of the loss; ``forward(out) -> scalar tensor``."""

    @abc.abstractmethod
    def forward(self, out: StepOutput) -> torch.Tensor:
        """This term's value on one step's outputs."""


class CrossEntropy(LossTerm):
    """The task loss, with label smoothing; on a mixed batch the weighted pair of both label sets."""

    def __init__(self, label_smoothing: float) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, out: StepOutput) -> torch.Tensor:
        loss = F.cross_entropy(out.logits, out.labels, label_smoothing=self.label_smoothing)
        if out.mixed_labels is None:
            return loss
        partner = F.cross_entropy(out.logits, out.mixed_labels, label_smoothing=self.label_smoothing)
        return out.mix_weight * loss + (1 - out.mix_weight) * partner


class DomainAlignment(LossTerm):
    """``trade_off`` x the aligner's loss (DANN, CDAN, CORAL, MMD, MCC; :mod:`headstart.domain.losses`)."""

    def __init__(self, trade_off: float) -> None:
        super().__init__()
        self.trade_off = trade_off

    def forward(self, out: StepOutput) -> torch.Tensor:
        assert out.alignment is not None, "the model ran without a target batch"
        return self.trade_off * out.alignment


def batch_spectral_shrinkage(features: torch.Tensor, k: int = 1) -> torch.Tensor:
    """The squared k smallest singular values of the batch's feature matrix (Chen et al., NeurIPS 2019)."""
    sv = torch.linalg.svdvals(features.float())
    return (sv[-k:] ** 2).sum()


class BatchSpectralShrinkage(LossTerm):
    """BSS: fine-tuning on little data lets the small-spectrum feature directions carry noise the
    pre-trained model did not have (negative transfer); shrinking them is the remedy."""

    def __init__(self, weight: float, k: int = 1) -> None:
        super().__init__()
        self.weight, self.k = weight, k

    def forward(self, out: StepOutput) -> torch.Tensor:
        assert out.features is not None, "BSS needs the pooled features"
        return self.weight * batch_spectral_shrinkage(out.features, self.k)


class L2SP(LossTerm):
    """L2-SP (Li et al., ICML 2018): ``weight / 2 * ||theta - theta_0||^2`` over the backbone's
    trainable weights, pulling them towards the pre-trained ones instead of towards zero."""

    def __init__(self, backbone: nn.Module, weight: float) -> None:
        super().__init__()
        self.weight = weight
        # Held by reference: the live parameters, not a copy in this module's state_dict.
        self._params = dict(backbone.named_parameters())
        self._anchor = {k: p.detach().clone() for k, p in self._params.items() if p.requires_grad}

    def forward(self, out: StepOutput) -> torch.Tensor:
        drift = sum(((p - self._anchor[k].to(p.device)) ** 2).sum() for k, p in self._params.items()
                    if k in self._anchor and p.requires_grad)
        return 0.5 * self.weight * drift if isinstance(drift, torch.Tensor) else out.logits.new_zeros(())


def loss_terms(config: FineTuneConfig, backbone: nn.Module, *, aligned: bool, trade_off: float = 1.0) -> list[LossTerm]:
    """The terms a config asks for: cross-entropy always, then alignment, BSS and L2-SP when on."""
    terms: list[LossTerm] = [CrossEntropy(config.label_smoothing)]
    if aligned:
        terms.append(DomainAlignment(trade_off))
    if config.bss > 0:
        terms.append(BatchSpectralShrinkage(config.bss))
    if config.l2sp > 0:
        terms.append(L2SP(backbone, config.l2sp))
    return terms


def total_loss(terms: list[LossTerm], out: StepOutput) -> torch.Tensor:
    loss = terms[0](out)
    for term in terms[1:]:
        loss = loss + term(out)
    return loss
