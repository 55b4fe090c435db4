"""Batched feature extraction with an on-disk cache keyed by content.

The cache key has three parts: the backbone's weights (a fingerprint of its tensors), its
preprocessing (the card's input spec), and each item's content hash. Features are stored per item,
so a new split, a subset or a superset of data seen before only runs the backbone on new items.
Each shard carries a SHA-256 of its bytes: a damaged shard is a cache miss (with a warning), never
a source of silently wrong features.
"""

from __future__ import annotations

import functools
import hashlib
import re
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ._io import atomic_file, cache_root
from ._malloc import tune_malloc
from .backbones.base import Backbone
from .data.dataset import Dataset
from .engine import OnnxFeatures, choose_engine, onnx_runner
from .errors import BackboneError, ConfigError, HeadstartWarning
from .progress import progress_bar


def default_cache_dir() -> Path:
    return cache_root() / "features"


def available_devices() -> list[str]:
    """The ``--device`` values this machine can run: ``auto``, ``cpu``, each CUDA GPU, ``mps``."""
    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` checked against what this machine has; ``None`` / ``"auto"``: a GPU when there is one."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    valid = available_devices()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    usable = dev is not None and (
        dev.type == "cpu"
        or (dev.type == "cuda" and torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count())
        or (dev.type == "mps" and "mps" in valid))
    if not usable:
        known = dev is not None and dev.type in ("cuda", "mps")
        raise ConfigError(f"--device {str(device)!r} {'is not available on this machine' if known else 'is not a device'}"
                          f"; valid devices here: {', '.join(valid)}.",
                          fix="pass one of those, or leave --device out to use a GPU when there is one.")
    return dev  # type: ignore[return-value]


def weights_fingerprint(backbone: Backbone, *, name: str | None = None) -> str:
    """SHA-256 over every parameter and buffer (names, shapes, bytes), or the card for ONNX models.

    ``name`` replaces the card's name in the digest (a saved model renames a copied backbone folder).
    """
    h = hashlib.sha256((name or backbone.card.name).encode())
    tensors = dict(backbone.state_dict())
    if not tensors:
        h.update(backbone.card.source.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous().reshape(-1)
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def cache_key(backbone: Backbone) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", backbone.card.name)[-60:]
    return f"{safe}-{backbone.card.preprocessing_key()}-{weights_fingerprint(backbone)}"


class FeatureCache:
    """Append-only shards of (content hash, feature row) per backbone key, as safetensors.

    Each shard's metadata holds the SHA-256 of its ``hashes`` and ``features`` bytes; a shard that
    fails the check (or cannot be read) is a cache miss, reported through ``warn``, and a damaged
    one is deleted so that its items are extracted and cached again.
    """

    def __init__(self, root: str | Path, key: str, *, warn=None) -> None:  # type: ignore[no-untyped-def]
        self.folder = Path(root) / key
        self.warn = warn or (lambda msg: warnings.warn(msg, HeadstartWarning, stacklevel=4))

    @staticmethod
    def digest(hashes: np.ndarray, features: np.ndarray) -> str:
        h = hashlib.sha256(memoryview(np.ascontiguousarray(hashes)).cast("B"))
        h.update(memoryview(np.ascontiguousarray(features)).cast("B"))
        return h.hexdigest()

    def _read(self, shard: Path, width: int | None) -> tuple[np.ndarray, np.ndarray]:
        """The shard's arrays once its checksum and shapes hold; ValueError says what is wrong."""
        from safetensors import safe_open

        with safe_open(str(shard), framework="numpy") as fh:
            meta = fh.metadata() or {}
            if set(fh.keys()) != {"hashes", "features"}:
                raise ValueError(f"unexpected tensors {sorted(fh.keys())}")
            hashes, feats = fh.get_tensor("hashes"), fh.get_tensor("features")
        if "sha256" not in meta:
            raise ValueError("no checksum (written by an older headstart)")
        if hashes.dtype != np.uint8 or hashes.ndim != 2 or hashes.shape[1] != 32:
            raise ValueError(f"hashes of shape {hashes.shape} and type {hashes.dtype}")
        if feats.dtype != np.float32 or feats.ndim != 2 or len(feats) != len(hashes) or (
                width is not None and feats.shape[1] != width):
            raise ValueError(f"features of shape {feats.shape} and type {feats.dtype}")
        if self.digest(hashes, feats) != meta["sha256"]:
            raise ValueError("its checksum does not match its bytes")
        return hashes, feats

    def load(self, width: int | None = None) -> dict[str, np.ndarray]:
        """Content hash -> feature row from every intact shard; ``width``: the expected feature size."""
        table: dict[str, np.ndarray] = {}
        if not self.folder.is_dir():
            return table
        for shard in sorted(self.folder.glob("shard-*.safetensors")):
            try:
                hashes, feats = self._read(shard, width)
            except OSError as exc:  # unreadable (permissions, I/O error): a miss, the file is left alone
                self.warn(f"Feature cache shard {shard} cannot be read ({exc}); its items will be extracted again.")
                continue
            except Exception as exc:  # damaged: truncated, scrambled, not safetensors, wrong shapes
                self.warn(f"Feature cache shard {shard} is damaged ({exc}); it is removed and its items will be "
                          "extracted again.")
                shard.unlink(missing_ok=True)
                continue
            for h, row in zip(hashes, feats):
                table[bytes(h).hex()] = row
        return table

    def add(self, hashes: Sequence[str], features: np.ndarray) -> None:
        """Write one shard atomically. A failed write (full disk, no permission) leaves no file behind
        and only costs the cache: the features in hand are still used."""
        from safetensors.numpy import save_file

        if not len(hashes):
            return
        arr = np.frombuffer(b"".join(bytes.fromhex(h) for h in hashes), dtype=np.uint8).reshape(len(hashes), 32)
        feats = np.ascontiguousarray(features, dtype=np.float32)
        try:
            with atomic_file(self.folder / f"shard-{hashes[0][:16]}-{len(hashes)}.safetensors") as tmp:
                save_file({"hashes": arr, "features": feats}, str(tmp), metadata={"sha256": self.digest(arr, feats)})
        except Exception as exc:  # OSError, or safetensors' own error for a failed write
            self.warn(f"Could not write to the feature cache {self.folder} ({type(exc).__name__}: {exc}); "
                      "these features were not cached.")


def _batches(data: Dataset, order: Sequence[int], backbone: Backbone, batch_size: int) -> Iterator[tuple[list[int], dict]]:
    """Preprocess the next batch on a worker thread while the model runs on the current one."""
    chunks = [list(order[i:i + batch_size]) for i in range(0, len(order), batch_size)]

    def prepare(idx: list[int]) -> tuple[list[int], dict]:
        return idx, backbone.preprocess([data.load(i) for i in idx])

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(prepare, chunks[0]) if chunks else None
        for k in range(len(chunks)):
            assert pending is not None
            current = pending.result()
            pending = pool.submit(prepare, chunks[k + 1]) if k + 1 < len(chunks) else None
            yield current


def run_backbone(backbone: Backbone, data: Dataset, indices: Sequence[int], *, batch_size: int = 64,
                 device: torch.device | None = None, progress: bool = True,
                 description: str = "Extracting features", source: bool = False, engine: str = "auto",
                 key: str | None = None) -> np.ndarray:
    """Features (or, with ``source``, the pre-training head's probabilities) for ``data[indices]``,
    without the cache. Texts are sorted by length to cut padding. ``engine``: see :mod:`headstart.engine`;
    ``key``: the backbone's :func:`cache_key` when the caller has it (it hashes every weight)."""
    tune_malloc()
    device = device or pick_device()
    key_of = functools.cache(lambda: key or cache_key(backbone))
    use_onnx = not source and choose_engine(engine, backbone, device, len(indices), key_of) == "onnx"
    runner: OnnxFeatures | None = None
    image = backbone.card.modality == "image"

    @functools.cache
    def inference_net() -> torch.nn.Module:
        # Built only when PyTorch runs or exports the network: with a cached ONNX graph it never is.
        # Outside inference mode: parameters re-created inside it would be inference tensors, and
        # a later fine-tune of the same backbone (LP-FT) could not train them.
        with torch.inference_mode(False):
            net = backbone.eval().to(device).for_inference()
            if image:  # NHWC is faster for convolutions on CPU and GPU alike (measured 1.8x on 2 CPU cores)
                net.to(memory_format=torch.channels_last)
        return net

    order = list(indices) if image else sorted(indices, key=lambda i: len(data.items[i]))
    width = backbone.card.source_classes if source else backbone.card.feature_dim
    row_of = {i: k for k, i in enumerate(indices)}  # rows for the requested items only
    out = np.empty((len(row_of), width), dtype=np.float32)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    description += " (ONNX Runtime)" if use_onnx else ""
    with progress_bar(description, total=len(order), enabled=progress) as advance, torch.inference_mode():
        for idx, inputs in _batches(data, order, backbone, batch_size):
            if use_onnx and runner is None:  # exported (once per backbone) from the first real batch
                runner = onnx_runner(inference_net, key_of(), inputs["pixel_values"], strict=engine == "onnx")
                use_onnx = runner is not None
            if runner is not None:
                out[[row_of[i] for i in idx]] = runner(inputs["pixel_values"])
                advance(len(idx))
                continue
            inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
            if image and "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].contiguous(memory_format=torch.channels_last)
            net = inference_net()
            with autocast:
                feats = net.source_logits(**inputs).float().softmax(-1) if source else net(**inputs)
            out[[row_of[i] for i in idx]] = feats.float().cpu().numpy()
            advance(len(idx))
    return out


def source_probabilities(backbone: Backbone, features: np.ndarray) -> np.ndarray:
    """The pre-training head's probabilities ``[N, classes]`` from pooled ``features`` already in hand,
    for backbones whose :meth:`~Backbone.source_head` is a layer on those features."""
    head = backbone.source_head()
    if head is None:
        raise BackboneError(f"'{backbone.card.name}' has no head on its pooled features.",
                            fix="use extract_features(..., source=True).")
    with torch.inference_mode():
        return head(torch.from_numpy(features).to(head.weight.dtype)).float().softmax(-1).numpy()


def extract_features(backbone: Backbone, data: Dataset, *, cache_dir: str | Path | None = None,
                     use_cache: bool = True, batch_size: int = 64, device: str | torch.device | None = None,
                     progress: bool = True, source: bool = False, engine: str = "auto") -> np.ndarray:
    """``[len(data), feature_dim]`` float32 features, from the cache where possible.

    ``source=True``: the probabilities of the backbone's pre-training head instead (``[N, classes]``,
    for LEEP / NCE and ConSE), cached under their own key.
    """
    return extract_features_many(backbone, [data], cache_dir=cache_dir, use_cache=use_cache, batch_size=batch_size,
                                 device=device, progress=progress, source=source, engine=engine)[0]


def extract_features_many(backbone: Backbone, datasets: Sequence[Dataset], *, cache_dir: str | Path | None = None,
                          use_cache: bool = True, batch_size: int = 64, device: str | torch.device | None = None,
                          progress: bool = True, source: bool = False, engine: str = "auto") -> list[np.ndarray]:
    """Features for several data sets (e.g. train / val / test) with one cache read and one
    backbone pass over the items none of them has in the cache."""
    if source and not backbone.card.source_classes:
        raise BackboneError(f"The backbone '{backbone.card.name}' has no pre-training head.")
    for data in datasets:
        if data.modality != backbone.card.modality:
            raise BackboneError(f"The backbone '{backbone.card.name}' takes {backbone.card.modality}s but "
                                f"{data.source} holds {data.modality}s.",
                                fix=f"pick a {data.modality} backbone (see `headstart backbones`).")
    if source and backbone.source_head() is not None:
        # The pre-training head sits on the pooled features: apply it to the (cached) features
        # instead of a second pass through the network, which halves the cost of ranking with LEEP/NCE.
        feats = extract_features_many(backbone, datasets, cache_dir=cache_dir, use_cache=use_cache,
                                      batch_size=batch_size, device=device, progress=progress, engine=engine)
        return [source_probabilities(backbone, f) for f in feats]
    width = backbone.card.source_classes if source else backbone.card.feature_dim
    dev = pick_device(device)
    if not use_cache:
        return [run_backbone(backbone, data, range(len(data)), batch_size=batch_size, device=dev, progress=progress,
                             source=source, engine=engine) if len(data) else np.empty((0, width), dtype=np.float32)
                for data in datasets]
    key = cache_key(backbone)
    cache = FeatureCache(cache_dir or default_cache_dir(), key + ("-source" if source else ""))
    known = cache.load(width)
    missing: dict[str, tuple[Dataset, int]] = {}  # content hash -> one place it occurs
    for data in datasets:
        for i, h in enumerate(data.content_hashes()):
            if h not in known:
                missing.setdefault(h, (data, i))
    if missing:
        first = datasets[0]
        todo = Dataset(first.modality, [d.items[i] for d, i in missing.values()], None,
                       [d.ids[i] for d, i in missing.values()], source=first.source)
        new = run_backbone(backbone, todo, range(len(todo)), batch_size=batch_size, device=dev, progress=progress,
                           source=source, engine=engine, key=key)
        cache.add(list(missing), new)
        known.update(zip(missing, new))
    return [np.stack([known[h] for h in data.content_hashes()]).astype(np.float32, copy=False) if len(data)
            else np.empty((0, width), dtype=np.float32) for data in datasets]
