"""TransferClassifier inside scikit-learn's machinery, with real texts and real weights.

scikit-learn's data-dependent estimator checks generate numeric 2-D arrays, which this estimator
does not take (its inputs are texts or images, declared in its tags), so they are exempt; the API
checks that do not depend on the input type run below.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils import estimator_checks as ec

from headstart.sklearn import TransferClassifier

API_CHECKS = [ec.check_no_attributes_set_in_init, ec.check_parameters_default_constructible,
              ec.check_get_params_invariance, ec.check_set_params, ec.check_estimator_cloneable,
              ec.check_estimator_repr, ec.check_estimator_tags_renamed, ec.check_valid_tag_types]


@pytest.mark.parametrize("check", API_CHECKS, ids=lambda c: c.__name__)
def test_sklearn_api_checks(check) -> None:
    check("TransferClassifier", TransferClassifier())


@pytest.fixture(scope="module")
def news(bbc_small):
    return bbc_small.items, np.array(bbc_small.labels)


def test_cross_val_score_and_grid_search(news) -> None:
    x, y = news
    clf = TransferClassifier(max_length=64)
    scores = cross_val_score(clf, x, y, cv=3)
    assert scores.mean() > 0.8
    grid = GridSearchCV(clf, {"head": ["linear", "mlp"]}, cv=3).fit(x, y)
    assert grid.best_params_["head"] in ("linear", "mlp") and grid.best_score_ > 0.8
    assert set(grid.classes_) == set(y)


def test_pipeline_and_label_types(news) -> None:
    x, y = news
    codes = {name: i * 10 for i, name in enumerate(sorted(set(y)))}  # integer labels 0, 10, 20... (not "10" < "2")
    y_int = np.array([codes[v] for v in y])
    pipe = make_pipeline(FunctionTransformer(lambda texts: [t.lower() for t in texts]),
                         TransferClassifier(max_length=64))
    pipe.fit(x[::2], y_int[::2])
    pred = pipe.predict(x[1::2])
    assert pred.dtype == y_int.dtype and set(pred) <= set(y_int)
    assert (pred == y_int[1::2]).mean() > 0.8


def test_fit_restarts_from_pretrained_weights(news) -> None:
    x, y = news
    a = TransferClassifier(max_length=64).fit(x[:90], y[:90])
    b = clone(a).fit(x[:90], y[:90])
    assert np.array_equal(a.predict_proba(x[90:100]), b.predict_proba(x[90:100]))


def test_image_arrays(mnist_small) -> None:
    images = np.stack(mnist_small.items[:200])
    labels = np.array([int(v) for v in mnist_small.labels[:200]])
    clf = TransferClassifier(image_size=64).fit(images[::2], labels[::2])
    assert clf.predict(images[1::2]).shape == (100,)
    assert clf.predict_proba(images[1::2]).shape[1] == len(np.unique(labels[::2]))
