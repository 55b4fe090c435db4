"""Feature extraction and the content-keyed cache."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from headstart.backbones import create_backbone
from headstart.data import from_arrays
from headstart.features import extract_features, weights_fingerprint


class CountingBackbone:
    """Wraps a backbone's forward to count the items it really runs on."""

    def __init__(self, backbone) -> None:
        self.count = 0
        self.backbone = backbone
        original = backbone.forward

        def forward(**inputs):
            self.count += next(iter(inputs.values())).shape[0]
            return original(**inputs)

        backbone.forward = forward


def test_second_extraction_hits_the_cache_and_subsets_reuse_it(tmp_path, bbc_small) -> None:
    bb = create_backbone("minilm-l6", max_length=64)
    counter = CountingBackbone(bb)
    data = bbc_small.subset(range(40))
    first = extract_features(bb, data, cache_dir=tmp_path, progress=False)
    assert counter.count == 40
    again = extract_features(bb, data, cache_dir=tmp_path, progress=False)
    assert counter.count == 40 and np.array_equal(first, again)
    # A different subset overlapping the first runs the backbone only on the 10 new items.
    more = extract_features(bb, bbc_small.subset(range(30, 50)), cache_dir=tmp_path, progress=False)
    assert counter.count == 50
    assert np.array_equal(more[:10], first[30:40])
    # Cached features equal freshly computed ones, in the data's order (texts are length-sorted inside).
    fresh = extract_features(bb, data, use_cache=False, progress=False)
    assert np.allclose(fresh, first, atol=1e-5)


def test_cache_key_follows_weights_and_preprocessing(tmp_path) -> None:
    data = from_arrays(["alpha beta", "gamma delta"], ["a", "b"])
    bb = create_backbone("minilm-l6", max_length=64)
    before = weights_fingerprint(bb)
    f1 = extract_features(bb, data, cache_dir=tmp_path, progress=False)
    with torch.no_grad():
        bb.model.embeddings.word_embeddings.weight.mul_(1.5)  # "fine-tuned" weights
    assert weights_fingerprint(bb) != before
    f2 = extract_features(bb, data, cache_dir=tmp_path, progress=False)
    assert not np.allclose(f1, f2), "changed weights must not be served stale cached features"
    assert len(list(tmp_path.iterdir())) == 2


def test_damaged_cache_shard_is_only_a_miss(tmp_path) -> None:
    data = from_arrays(["one text", "another text"], ["a", "b"])
    bb = create_backbone("minilm-l6", max_length=32)
    f1 = extract_features(bb, data, cache_dir=tmp_path, progress=False)
    for shard in tmp_path.rglob("shard-*.safetensors"):
        shard.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="is damaged"):
        f2 = extract_features(bb, data, cache_dir=tmp_path, progress=False)
    assert np.allclose(f1, f2, atol=1e-5)


def test_modality_mismatch_is_a_clear_error(lite0) -> None:
    import pytest

    from headstart.errors import BackboneError

    with pytest.raises(BackboneError, match="takes images but .* holds texts.*pick a text backbone"):
        extract_features(lite0, from_arrays(["a text"], ["x"]), progress=False)


def test_extracting_features_leaves_the_backbone_trainable(lite0) -> None:
    """Regression: converting to channels_last inside inference mode made the weights inference
    tensors, so LP-FT on images failed after its own probe's feature extraction."""
    import copy

    import headstart
    from headstart.features import run_backbone

    bb = copy.deepcopy(lite0)
    data = headstart.load_data([np.full((32, 32, 3), v, dtype=np.uint8) for v in (0, 200)], modality="image")
    run_backbone(bb, data, range(2), progress=False)
    assert not any(p.is_inference() for p in bb.parameters())
    for p in bb.parameters():
        p.requires_grad_(True)  # what the training loop does; raised before the fix


def test_source_probabilities_come_from_one_pass_and_match_the_head(lite0, mnist_small, tmp_path) -> None:
    """LEEP / NCE / ConSE inputs: the ImageNet head's softmax, taken from the cached features (one
    network pass for features and probabilities) and equal to running the network's own head."""
    data = mnist_small.subset(range(6))
    calls = []
    hook = lite0.register_forward_hook(lambda *a: calls.append(1))
    try:
        # the torch engine, so that the hook sees the network's passes
        feats = extract_features(lite0, data, cache_dir=tmp_path, progress=False, engine="torch")
        probs = extract_features(lite0, data, cache_dir=tmp_path, progress=False, source=True, engine="torch")
    finally:
        hook.remove()
    assert len(calls) == 1  # one batch, features only; the probabilities reused them
    from headstart.features import run_backbone

    direct = run_backbone(lite0, data, range(6), progress=False, source=True)  # the network's own head
    assert feats.shape == (6, 1280) and probs.shape == (6, 1000)
    np.testing.assert_allclose(probs, direct, atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def _pixels(n: int):  # type: ignore[no-untyped-def]
    import headstart

    rng = np.random.default_rng(1)
    return headstart.load_data([rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(n)], modality="image")


def _scramble_features(shard) -> None:  # type: ignore[no-untyped-def]
    """Flip bytes inside the features tensor, leaving a well-formed safetensors file."""
    import struct

    raw = bytearray(shard.read_bytes())
    header_len = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + header_len])
    start, end = header["features"]["data_offsets"]
    base = 8 + header_len
    for i in range(base + start, base + end, 97):
        raw[i] ^= 0x5A
    shard.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["scrambled", "no checksum", "truncated"])
def test_damaged_shard_is_detected_removed_and_reextracted(tmp_path, damage) -> None:
    from safetensors.numpy import load_file, save_file

    bb = create_backbone("raw-pixels")
    counter = CountingBackbone(bb)
    data = _pixels(6)
    first = extract_features(bb, data, cache_dir=tmp_path, progress=False)
    (shard,) = tmp_path.rglob("shard-*.safetensors")
    if damage == "scrambled":
        _scramble_features(shard)
        assert np.abs(load_file(str(shard))["features"] - first).max() > 0.1  # still loads, silently wrong
    elif damage == "no checksum":
        save_file(load_file(str(shard)), str(shard))
    else:
        shard.write_bytes(shard.read_bytes()[:-40])
    with pytest.warns(UserWarning, match="Feature cache shard .* is damaged"):
        again = extract_features(bb, data, cache_dir=tmp_path, progress=False)
    assert counter.count == 12  # all six items ran again
    np.testing.assert_array_equal(again, first)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the re-written shard is intact: no warning, no extraction
        np.testing.assert_array_equal(extract_features(bb, data, cache_dir=tmp_path, progress=False), first)
    assert counter.count == 12


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), PermissionError(13, "Permission denied")])
def test_failed_cache_write_leaves_no_temporary_file(tmp_path, monkeypatch, error) -> None:
    import safetensors.numpy

    def write_half_then_fail(tensors, filename, metadata=None):  # type: ignore[no-untyped-def]
        with open(filename, "wb") as fh:
            fh.write(b"\0" * 100)
        raise error

    monkeypatch.setattr(safetensors.numpy, "save_file", write_half_then_fail)
    bb = create_backbone("raw-pixels")
    with pytest.warns(UserWarning, match="Could not write to the feature cache"):
        feats = extract_features(bb, _pixels(3), cache_dir=tmp_path, progress=False)
    assert feats.shape == (3, 3072)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


def test_unknown_device_is_a_config_error_listing_valid_ones() -> None:
    from headstart.errors import ConfigError
    from headstart.features import pick_device

    with pytest.raises(ConfigError, match=r"--device 'tpu' is not a device; valid devices here: auto, cpu"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"'cuda:0' is not available on this machine.*valid devices here"):
            pick_device("cuda:0")
    assert pick_device("cpu") == torch.device("cpu")
