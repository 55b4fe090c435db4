"""Workflows: several strategies, backbones or data sets run end to end on the method layer.

- :mod:`.pipeline`: ``train_model`` (one strategy on one split), the default backbones, label encoding.
- :mod:`.rank`: ``rank_backbones`` and its ``confirm_ranking`` by short training runs.
- :mod:`.ladder`: what each label budget buys.
- :mod:`.gap`: the domain gap between two data sets, measured through a backbone.
"""
