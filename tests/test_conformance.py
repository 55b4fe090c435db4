"""Every registered strategy passes the same checks (scikit-learn's test_common spirit): it fits tiny
data, saves, reloads with identical probabilities, and exports to ONNX or says clearly why not."""

from __future__ import annotations

import numpy as np
import pytest

import headstart
from headstart.errors import HeadstartError
from headstart.methods import STRATEGIES

# The smallest settings that still run each strategy's real code path.
OPTIONS = {"full": {"epochs": 1, "batch_size": 8}, "partial": {"epochs": 1, "batch_size": 8},
           "gradual": {"epochs": 1, "batch_size": 8}, "lp-ft": {"epochs": 1, "batch_size": 8},
           "lora": {"epochs": 1, "batch_size": 8}, "setfit": {"epochs": 1, "pairs_per_example": 2},
           "domain-adapt": {"method": "coral", "epochs": 1, "batch_size": 8}, "auto": {"epochs": 1}}


@pytest.fixture(scope="module")
def news(bbc_small):
    return bbc_small.subset(range(0, 150, 3))  # 50 real articles, 10 per topic


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_every_strategy_fits_saves_reloads_and_exports(strategy, news, bbc_small, tiny_bert_dir, tmp_path) -> None:
    out = tmp_path / "run"
    target = bbc_small.subset(range(1, 150, 5)) if STRATEGIES.get(strategy).needs_target else None
    if target is not None:
        target.labels = None  # unlabelled, as a target domain is
    pool = bbc_small.subset(range(2, 150, 5)) if STRATEGIES.get(strategy).pool == "needed" else None
    if pool is not None:
        pool.labels = None
    model = headstart.fit(news, backbone=f"hf:{tiny_bert_dir}", strategy=strategy, options=OPTIONS.get(strategy, {}),
                          out=out, target=target, unlabelled=pool, progress=False, baseline=False)
    entry = STRATEGIES.get(strategy)
    if entry.trains != "may":  # what `headstart strategies` says about it holds
        assert model.backbone_trained == (entry.trains == "yes"), strategy
    probe = news.items[:6]
    again = headstart.load(out)
    assert np.array_equal(again.predict_proba(probe), model.predict_proba(probe))
    assert again.label_names == model.label_names == news.label_names
    from headstart.export.onnx import export_onnx

    try:
        report = export_onnx(out, probe)
    except HeadstartError as err:  # a clear refusal is allowed: it must say why
        assert len(str(err)) > 20 and "Fix:" in str(err)
    else:
        assert all(p["passed"] for p in report["parity"].values())
