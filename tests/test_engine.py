"""ONNX Runtime as the extraction engine: same features as PyTorch, exported once, safe fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headstart import engine
from headstart.errors import ConfigError
from headstart.features import cache_key, extract_features


@pytest.fixture()
def engine_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


def test_onnx_engine_matches_torch_and_exports_once(lite0, mnist_small, engine_cache, monkeypatch) -> None:
    data = mnist_small.subset(range(20))
    want = extract_features(lite0, data, use_cache=False, engine="torch", progress=False)
    got = extract_features(lite0, data, use_cache=False, engine="onnx", progress=False)
    assert got.shape == want.shape == (20, 1280)
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())
    graphs = list(engine_cache.glob("*.onnx"))
    assert [g.stem for g in graphs] == [cache_key(lite0)]
    assert (engine_cache / f"{cache_key(lite0)}.json").is_file()  # the parity check's record

    def no_export(*a, **k):
        raise AssertionError("exported twice")

    monkeypatch.setattr(engine, "_export", no_export)
    # auto now takes the cached graph even for a handful of images, and the torch net never runs
    # (nor is it even built: folding a copy of the weights is wasted work once a graph exists)
    calls = []
    hook = lite0.register_forward_hook(lambda *a: calls.append(1))
    monkeypatch.setattr(lite0, "for_inference", lambda: pytest.fail("built the torch net for a cached graph"))
    try:
        again = extract_features(lite0, data.subset(range(5)), use_cache=False, progress=False)
    finally:
        hook.remove()
    assert calls == []
    np.testing.assert_allclose(again, got[:5], atol=1e-6)


def test_auto_engine_policy(lite0, minilm, engine_cache) -> None:
    cpu = torch.device("cpu")
    def key():
        return cache_key(lite0)
    assert engine.choose_engine("auto", lite0, cpu, 10, key) == "torch"  # an export would not pay back
    assert engine.choose_engine("auto", lite0, cpu, engine.EXPORT_MIN_ITEMS, key) == "onnx"
    assert engine.choose_engine("auto", lite0, torch.device("cuda"), 10_000, key) == "torch"
    assert engine.choose_engine("auto", minilm, cpu, 10_000, lambda: "text-key") == "torch"
    assert engine.choose_engine("torch", lite0, cpu, 10_000, key) == "torch"
    with pytest.raises(ConfigError, match="image backbones"):
        engine.choose_engine("onnx", minilm, cpu, 10, lambda: "text-key")
    with pytest.raises(ConfigError, match="Unknown engine"):
        engine.choose_engine("tensorrt", lite0, cpu, 10, key)


def test_failed_parity_discards_the_export_and_falls_back(lite0, mnist_small, engine_cache, monkeypatch) -> None:
    monkeypatch.setattr(engine, "PARITY_TOL", -1.0)  # no export can pass
    monkeypatch.setattr(engine, "EXPORT_MIN_ITEMS", 1)  # so that auto tries to export for 4 images
    data = mnist_small.subset(range(4))
    with pytest.warns(UserWarning, match="using PyTorch"):
        got = extract_features(lite0, data, use_cache=False, engine="auto", progress=False)
    want = extract_features(lite0, data, use_cache=False, engine="torch", progress=False)
    np.testing.assert_array_equal(got, want)
    assert not list(engine_cache.glob("*.onnx"))  # nothing left that a later run would trust
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        extract_features(lite0, data, use_cache=False, engine="onnx", progress=False)

