"""The loss terms the training loop adds up: each computes its published formula, and the config
switches on exactly the terms it names."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from headstart.train.config import FineTuneConfig
from headstart.train.losses import (L2SP, BatchSpectralShrinkage, CrossEntropy, DomainAlignment, StepOutput,
                                    loss_terms, total_loss)


def _out(**kw) -> StepOutput:
    g = torch.Generator().manual_seed(0)
    return StepOutput(torch.randn(6, 3, generator=g), torch.tensor([0, 1, 2, 0, 1, 2]), **kw)


def test_cross_entropy_on_a_mixed_batch_weights_both_label_sets() -> None:
    out = _out(mixed_labels=torch.tensor([2, 2, 1, 1, 0, 0]), mix_weight=0.3)
    a = F.cross_entropy(out.logits, out.labels, label_smoothing=0.1)
    b = F.cross_entropy(out.logits, out.mixed_labels, label_smoothing=0.1)
    assert CrossEntropy(0.1)(out).item() == pytest.approx(0.3 * a.item() + 0.7 * b.item(), rel=1e-6)
    plain = _out()
    assert CrossEntropy(0.0)(plain).item() == pytest.approx(F.cross_entropy(plain.logits, plain.labels).item())


def test_l2sp_is_zero_at_the_start_and_half_weight_times_squared_drift_after() -> None:
    net = nn.Linear(4, 2)
    net.bias.requires_grad_(False)  # frozen parameters are not pulled
    term = L2SP(net, weight=0.2)
    assert term(_out()).item() == 0.0
    with torch.no_grad():
        net.weight += 0.5  # 8 entries drift by 0.5
        net.bias += 3.0
    assert term(_out()).item() == pytest.approx(0.5 * 0.2 * 8 * 0.25)
    assert list(term.state_dict()) == []  # the anchor is not model state that would be saved


def test_bss_and_alignment_scale_their_signal() -> None:
    feats = torch.randn(8, 5, generator=torch.Generator().manual_seed(1))
    smallest = torch.linalg.svdvals(feats)[-1] ** 2
    assert BatchSpectralShrinkage(0.01)(_out(features=feats)).item() == pytest.approx(0.01 * smallest.item(), rel=1e-5)
    assert DomainAlignment(0.5)(_out(alignment=torch.tensor(2.0))).item() == 1.0


@pytest.mark.parametrize("config,aligned,expected", [
    (FineTuneConfig(), False, [CrossEntropy]),
    (FineTuneConfig(bss=1e-3, l2sp=0.01), False, [CrossEntropy, BatchSpectralShrinkage, L2SP]),
    (FineTuneConfig(), True, [CrossEntropy, DomainAlignment]),
])
def test_the_config_switches_on_exactly_its_terms(config, aligned, expected) -> None:
    terms = loss_terms(config, nn.Linear(2, 2), aligned=aligned, trade_off=0.3)
    assert [type(t) for t in terms] == expected
    out = _out(features=torch.randn(6, 4), alignment=torch.tensor(1.0))
    assert total_loss(terms, out).item() == pytest.approx(sum(t(out).item() for t in terms), rel=1e-6)
