"""Artifact round trip, atomic saves (kill -9 and Ctrl-C midway), and clear load errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import headstart
from headstart.errors import ArtifactError


@pytest.fixture(scope="module")
def text_model(bbc_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "bbc"
    model = headstart.fit(bbc_small, backbone="minilm-l6", max_length=64, out=out, progress=False)
    return model, out


def test_save_load_predict_identical(text_model, bbc_small) -> None:
    model, out = text_model
    assert sorted(p.name for p in out.iterdir()) == ["headstart.json", "model.safetensors", "report.html", "transfer_card.md"]
    loaded = headstart.load(out)
    texts = bbc_small.items[:20] + ["An entirely new sentence about interest rates."]
    assert np.array_equal(model.predict_proba(texts), loaded.predict_proba(texts))
    assert loaded.label_names == model.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    meta = json.loads((out / "headstart.json").read_text())
    assert meta["format_version"] == 1 and meta["backbone"]["name"] == "minilm-l6"
    assert meta["preprocessing"]["max_length"] == 64
    assert set(meta["metrics"]) == {"test", "baseline", "transfer_gain"}
    assert "torch" in meta["versions"]
    card = (out / "transfer_card.md").read_text()
    for heading in ("## What was reused", "## On what data", "## How", "## What it bought"):
        assert heading in card
    import re

    c_line = next(line for line in card.splitlines() if line.startswith("- Chosen regularisation C: "))
    assert re.fullmatch(r"- Chosen regularisation C: [0-9.e+-]{1,9}", c_line), c_line  # 3 significant digits


def test_artifact_has_no_pickle(text_model) -> None:
    _, out = text_model
    for path in out.iterdir():
        assert not path.read_bytes().startswith(b"\x80"), f"{path.name} looks like a pickle"
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as fh:
        # frozen backbone: not duplicated; the head may be wrapped by its calibration temperature
        keys = {k.replace("inner.", "") for k in fh.keys() if not k.startswith("ood.")}  # + the out-of-scope scorer
        assert keys <= {"head.weight", "head.bias", "head.temperature"}


def _linear(head):  # the trained linear layer, inside its calibration temperature when there is one
    return getattr(head, "inner", head)


def _old_probs(out: Path, texts: list[str]) -> np.ndarray:
    return headstart.load(out).predict_proba(texts)


def test_save_killed_midway_leaves_the_old_artifact(text_model, bbc_small) -> None:
    _, out = text_model
    texts = bbc_small.items[:10]
    before = _old_probs(out, texts)
    script = textwrap.dedent(f"""
        import time, headstart, headstart.artifact as art
        model = headstart.load({str(out)!r})
        getattr(model.head, "inner", model.head).bias.data += 5.0   # a different model
        def stall(path, data):                 # weights written, metadata not yet
            print("WRITING", flush=True)
            time.sleep(120)
        art.write_json_atomic = stall
        model.save({str(out)!r}, overwrite=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "WRITING", line
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert np.array_equal(_old_probs(out, texts), before)
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp-")]
    assert leftovers, "the killed save should have been writing into a hidden temporary folder"


def test_interrupted_save_cleans_up_and_keeps_old(text_model, bbc_small, monkeypatch) -> None:
    model, out = text_model
    texts = bbc_small.items[:5]
    before = _old_probs(out, texts)
    import headstart.artifact as art

    def interrupt(path, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(art, "write_json_atomic", interrupt)
    with pytest.raises(KeyboardInterrupt):
        model.save(out, overwrite=True)
    monkeypatch.undo()
    assert np.array_equal(_old_probs(out, texts), before)


def test_successful_save_replaces_atomically(text_model, tmp_path, bbc_small) -> None:
    model, _ = text_model
    target = tmp_path / "m"
    model.save(target)
    loaded = headstart.load(target)
    _linear(loaded.head).bias.data += 3.0
    loaded.info["note"] = "second"
    loaded.save(target, overwrite=True)
    again = headstart.load(target)
    assert again.info["note"] == "second"
    assert np.array_equal(_linear(again.head).bias.detach().numpy(), _linear(loaded.head).bias.detach().numpy())
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folders left


def test_load_errors_are_clear(text_model, tmp_path) -> None:
    _, out = text_model
    with pytest.raises(ArtifactError, match="is not a headstart model"):
        headstart.load(tmp_path)
    bad = tmp_path / "future"
    bad.mkdir()
    for f in out.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    meta = json.loads((bad / "headstart.json").read_text())
    meta["format_version"] = 99
    (bad / "headstart.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="format version 99"):
        headstart.load(bad)
    meta["format_version"] = 1
    meta["backbone"]["fingerprint"] = "0" * 16
    (bad / "headstart.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="different weights"):
        headstart.load(bad)


def test_gain_sentence_warns_on_negative_transfer() -> None:
    from headstart.report.card import gain_sentence

    assert gain_sentence(-0.05, "TF-IDF").startswith("WARNING: negative transfer")
    assert "+3.0" in gain_sentence(0.03, "TF-IDF")


def test_ctrl_c_while_fit_writes_its_report_leaves_the_earlier_model(tmp_path, monkeypatch) -> None:
    """The report is written inside the new folder before it replaces the old one: an interruption
    there leaves the earlier model byte for byte, and no temporary folder."""
    import headstart.api as api

    out = tmp_path / "m"
    kw = {"backbone": "raw-pixels", "progress": False, "baseline": False, "out": out}
    headstart.fit("builtin:digits:20", **kw)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert "report.html" in before

    def interrupt(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "write_fit_report", interrupt)
    with pytest.raises(KeyboardInterrupt):
        headstart.fit("builtin:digits:20", seed=1, overwrite=True, **kw)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
