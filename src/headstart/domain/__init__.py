"""Domain adaptation: measure the gap between source and target, align them, guard against
negative transfer.

- :mod:`.gap`: MMD permutation test, proxy A-distance, per-class shift, t-SNE plot.
- :mod:`.losses`: DANN, CDAN+E, CORAL, MK-MMD and MCC as ``nn.Module`` aligners (registry ``ALIGNERS``).
- :mod:`.validators`: label-free validators (registry ``VALIDATORS``).
- :mod:`.adapt`: ``adapt_domain`` on the shared training loop, with the negative-transfer guard.
"""
