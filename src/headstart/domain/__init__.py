"""Domain shift, measured and aligned: pure functions and losses (the strategy is
:mod:`headstart.methods.domain_adapt`).

- :mod:`.gap`: MMD permutation test, proxy A-distance, per-class shift, t-SNE plot.
- :mod:`.losses`: DANN, CDAN+E, CORAL, MK-MMD and MCC as ``nn.Module`` aligners (registry ``ALIGNERS``).
- :mod:`.validators`: label-free validators (registry ``VALIDATORS``).
- :mod:`.label_shift`: the target's class proportions without its labels (BBSE, EM; registry
  ``SHIFT_ESTIMATORS``), prior re-weighting and class weights.
"""
