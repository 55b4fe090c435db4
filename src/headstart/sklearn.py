"""``TransferClassifier``: a scikit-learn estimator over headstart's backbones and strategies.

It follows scikit-learn's contract: ``__init__`` only stores arguments, ``fit`` does the work and
returns ``self``, learned state ends in ``_``, and ``get_params`` comes from the signature, so it
works inside ``Pipeline``, ``cross_val_score`` and ``GridSearchCV``. ``fit`` always restarts from
the pre-trained weights. ``X`` is a list of texts, an image array ``[N, H, W(, C)]`` or a list of
image paths / arrays; a validation part of the training data (``val``) chooses hyper-parameters.
Features go through the on-disk cache, so cross-validation extracts each item once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted


class TransferClassifier(ClassifierMixin, BaseEstimator):
    def __init__(self, backbone: str | None = None, strategy: str = "linear-probe", head: str = "linear",
                 val: float = 0.15, seed: int = 0, image_size: int | None = None, max_length: int | None = None,
                 modality: str | None = None, cache_dir: str | None = None, use_cache: bool = True,
                 device: str | None = None, batch_size: int = 64, progress: bool = False) -> None:
        self.backbone = backbone
        self.strategy = strategy
        self.head = head
        self.val = val
        self.seed = seed
        self.image_size = image_size
        self.max_length = max_length
        self.modality = modality
        self.cache_dir = cache_dir
        self.use_cache = use_cache
        self.device = device
        self.batch_size = batch_size
        self.progress = progress

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        # Inputs are texts or images, not numeric 2-D arrays; see tests/test_sklearn.py for which
        # of scikit-learn's estimator checks apply.
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.non_deterministic = False
        return tags

    def _dataset(self, X: Any, y: Any = None) -> Any:
        from .data import from_arrays

        return from_arrays(X if isinstance(X, np.ndarray) else list(X), y, modality=self.modality)

    def fit(self, X: Any, y: Any) -> TransferClassifier:
        from .backbones import create_backbone
        from .data import split
        from .methods import make_config
        from .runtime import Runtime
        from .workflows.pipeline import backbone_name, train_model

        y = np.asarray(y)
        self.classes_ = np.unique(y)
        # Class k is stored as the label "k": headstart sorts "2" before "10", matching classes_.
        index = {c: i for i, c in enumerate(self.classes_.tolist())}
        data = self._dataset(X, [str(index[v]) for v in y.tolist()])
        parts = split(data, val=self.val, test=0.0, seed=self.seed)
        label_names = [str(i) for i in range(len(self.classes_))]
        bb = create_backbone(backbone_name(self.backbone, data.modality), image_size=self.image_size,
                             max_length=self.max_length)
        config = make_config(self.strategy, **({"head": self.head} if self.strategy == "linear-probe" else {}))
        self.model_, _, _, self.fit_info_ = train_model(
            bb, parts, label_names, self.strategy, config, seed=self.seed,
            runtime=Runtime(device=self.device, cache_dir=self.cache_dir, use_cache=self.use_cache,
                            batch_size=self.batch_size, progress=self.progress))
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.model_.predict_proba(self._dataset(X), cache_dir=self.cache_dir, use_cache=self.use_cache,
                                         batch_size=self.batch_size, device=self.device, progress=self.progress)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]
