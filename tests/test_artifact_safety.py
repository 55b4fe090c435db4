"""A saved model folder is pure data: loading it never runs code, never reaches the network, never
reads outside the folder, and every malformed field is a clear ArtifactError."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import headstart
from headstart.heads import LinearHead
from headstart.backbones import create_backbone
from headstart.errors import ArtifactError, BackboneError, HeadstartError
from headstart.model import TransferModel

SRC = Path(headstart.__file__).parent


def _images(n: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (20, 20, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture
def pixel_model(tmp_path) -> Path:
    """A 3-class model on the parameter-free raw-pixels backbone: saved in milliseconds."""
    bb = create_backbone("raw-pixels")
    torch.manual_seed(0)
    model = TransferModel(bb, LinearHead(bb.card.feature_dim, 3), ["a", "b", "c"])
    return model.save(tmp_path / "pixels")


@pytest.fixture
def bert_copy(tiny_bert_dir, tmp_path) -> Path:
    folder = tmp_path / "bert-src"
    shutil.copytree(tiny_bert_dir, folder)
    return folder


def _edit(folder: Path, change) -> None:  # type: ignore[no-untyped-def]
    meta = json.loads((folder / "headstart.json").read_text())
    meta = change(meta) or meta
    (folder / "headstart.json").write_text(json.dumps(meta))


# -- code shipped with a model is never run ------------------------------------------------------
def _with_custom_code(folder: Path, marker: Path, *, auto_map: bool, py: bool) -> None:
    if py:
        (folder / "configuration_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    if auto_map:
        cfg = json.loads((folder / "config.json").read_text())
        cfg["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"}
        (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("auto_map,py", [(True, True), (True, False), (False, True)])
def test_hf_folder_with_custom_code_is_refused_without_asking(bert_copy, tmp_path, monkeypatch, auto_map, py) -> None:
    marker = tmp_path / "code-ran"
    _with_custom_code(bert_copy, marker, auto_map=auto_map, py=py)
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("transformers asked whether to run the code"))
    with pytest.raises(BackboneError, match="ships its own Python code.*never runs code"):
        create_backbone(f"hf:{bert_copy}")
    assert not marker.exists()


def test_custom_code_added_to_a_saved_backbone_folder_is_refused_on_load(bert_copy, tmp_path) -> None:
    bb = create_backbone(f"hf:{bert_copy}")
    out = TransferModel(bb, LinearHead(bb.card.feature_dim, 2), ["x", "y"]).save(tmp_path / "m")
    marker = tmp_path / "code-ran"
    _with_custom_code(out / "backbone", marker, auto_map=True, py=True)
    with pytest.raises(HeadstartError, match=r"configuration_evil\.py"):
        headstart.load(out)
    assert not marker.exists()


def _calls(text: str, name: str) -> list[str]:
    """The argument text of each ``name(...)`` call in ``text`` (balanced parentheses)."""
    out = []
    for m in re.finditer(re.escape(name) + r"\(", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        out.append(text[m.end():i - 1])
    return out


@pytest.mark.parametrize("path", sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                                        if ".from_pretrained(" in p.read_text(encoding="utf-8")
                                        or "torch.load(" in p.read_text(encoding="utf-8")))
def test_every_loader_call_refuses_code_and_pickles(path: str) -> None:
    text = (SRC / path).read_text(encoding="utf-8")
    for args in _calls(text, ".from_pretrained"):
        assert "trust_remote_code=False" in args, f"{path}: from_pretrained({args}) may run a model's own code"
    for args in _calls(text, "torch.load"):
        assert "weights_only=True" in args, f"{path}: torch.load({args}) would unpickle"


# -- backbones: zoo names, folders inside the artifact, hub ids from the local cache --------------
def test_local_hf_backbone_is_copied_into_the_artifact_and_loads_without_the_original(bert_copy, tmp_path,
                                                                                      monkeypatch) -> None:
    bb = create_backbone(f"hf:{bert_copy}", max_length=32)
    model = TransferModel(bb, LinearHead(bb.card.feature_dim, 2), ["x", "y"])
    out = model.save(tmp_path / "m")
    meta = json.loads((out / "headstart.json").read_text())
    assert meta["backbone"]["name"] == meta["backbone"]["card"]["name"] == "hf:backbone"
    assert (out / "backbone" / "model.safetensors").is_file() and (out / "backbone" / "config.json").is_file()
    texts = ["a short text", "another, rather longer, text about things"]
    want = model.predict_proba(texts)
    # The original folder is gone, and the working directory holds a different "backbone" folder:
    # the artifact loads its own copy.
    shutil.rmtree(bert_copy)
    decoy = tmp_path / "cwd" / "backbone"
    shutil.copytree(out / "backbone", decoy)
    from safetensors.torch import load_file, save_file

    weights = {k: v + 1 for k, v in load_file(str(decoy / "model.safetensors")).items()}
    save_file(weights, str(decoy / "model.safetensors"))
    monkeypatch.chdir(tmp_path / "cwd")
    loaded = headstart.load(out)
    assert loaded.backbone.card.input.max_length == 32
    np.testing.assert_array_equal(loaded.predict_proba(texts), want)
    # Saving the loaded model again keeps it self-contained.
    again = loaded.save(tmp_path / "m2")
    shutil.rmtree(out)
    np.testing.assert_array_equal(headstart.load(again).predict_proba(texts), want)


def test_vision_folder_round_trips_and_a_malformed_config_in_it_is_a_clear_error(tiny_vit_dir, tmp_path) -> None:
    bb = create_backbone(f"hf:{tiny_vit_dir}")
    model = TransferModel(bb, LinearHead(bb.card.feature_dim, 2), ["x", "y"])
    out = model.save(tmp_path / "vit")
    np.testing.assert_array_equal(headstart.load(out).predict_proba(_images()), model.predict_proba(_images()))
    (out / "backbone" / "preprocessor_config.json").write_text('{"size": {"height": [1, 2]}')
    with pytest.raises(BackboneError, match="malformed configuration file"):
        headstart.load(out)


def test_backbone_folder_without_safetensors_is_refused_at_save(bert_copy, tmp_path) -> None:
    bb = create_backbone(f"hf:{bert_copy}")
    (bert_copy / "model.safetensors").unlink()
    with pytest.raises(ArtifactError, match="no \\*.safetensors weights.*save_pretrained"):
        TransferModel(bb, LinearHead(bb.card.feature_dim, 2), ["x", "y"]).save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


@pytest.fixture
def bert_model(bert_copy, tmp_path) -> Path:
    bb = create_backbone(f"hf:{bert_copy}")
    return TransferModel(bb, LinearHead(bb.card.feature_dim, 2), ["x", "y"]).save(tmp_path / "bert-model")


@pytest.mark.parametrize("name,message", [
    ("hf:{outside}", "absolute path"),
    ("hf:../bert-src", "leads outside the folder"),
    ("hf:backbone/../../bert-src", "leads outside the folder"),
    ("hf:~/models/x", "absolute path"),
    ("pickle:model.pkl", "neither a zoo backbone nor an hf: or timm: name"),
])
def test_backbone_names_cannot_leave_the_artifact(bert_model, bert_copy, name, message) -> None:
    _edit(bert_model, lambda m: m["backbone"].update(name=name.format(outside=bert_copy)))
    with pytest.raises(ArtifactError, match=message):
        headstart.load(bert_model)


def test_symlinks_out_of_the_backbone_folder_are_refused(bert_model, bert_copy) -> None:
    target = bert_model / "backbone" / "model.safetensors"
    target.unlink()
    target.symlink_to(bert_copy / "model.safetensors")
    with pytest.raises(ArtifactError, match="links outside the model folder"):
        headstart.load(bert_model)
    shutil.rmtree(bert_model / "backbone")
    (bert_model / "backbone").symlink_to(bert_copy, target_is_directory=True)
    with pytest.raises(ArtifactError, match="leads outside the folder"):
        headstart.load(bert_model)


def test_pickles_in_the_backbone_folder_are_refused(bert_model) -> None:
    (bert_model / "backbone" / "pytorch_model.bin").write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(ArtifactError, match="pytorch_model.bin.*not a data file"):
        headstart.load(bert_model)


def test_hub_id_missing_from_the_cache_is_a_clear_error_and_no_network(bert_model, monkeypatch) -> None:
    lookups = []

    def no_network(*args, **kwargs):  # type: ignore[no-untyped-def]
        lookups.append(args[:2])
        raise OSError("network use in a test")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    _edit(bert_model, lambda m: m["backbone"].update(name="hf:someone/not-downloaded-model"))
    with pytest.raises(ArtifactError, match=r"not in this machine's Hugging Face cache.*hf download "
                                            r"someone/not-downloaded-model"):
        headstart.load(bert_model)
    assert lookups == []


# -- headstart.json: every field validated --------------------------------------------------------
def _drop(*keys):  # type: ignore[no-untyped-def]
    def change(meta):  # type: ignore[no-untyped-def]
        node = meta
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]
    return change


def _set(value, *keys):  # type: ignore[no-untyped-def]
    def change(meta):  # type: ignore[no-untyped-def]
        node = meta
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return change


@pytest.mark.parametrize("change,message", [
    (lambda m: [m], r"must hold a JSON object, got \[\{"),
    (_drop("labels"), r"`labels` must be a non-empty list of distinct strings.*got nothing \(the key is missing\)"),
    (_set(["a", "b"], "labels"), r"head predicts 3 classes but `labels` names 2"),
    (_set(["a", "a", "b"], "labels"), r"`labels` must be a non-empty list of distinct strings"),
    (_set("abc", "labels"), r"`labels` must be .*got \"abc\" \(str\)"),
    (_set(1, "backbone", "card", "input", "image_size"), r"`backbone.card.input.image_size` must be an integer "
                                                         r"from 16 to 4096, got 1 \(int\)"),
    (_set("32", "backbone", "card", "input", "image_size"), r"`backbone.card.input.image_size` must be an integer"),
    (_set([0.5, 0.5, 0.0], "backbone", "card", "input", "std"), r"`backbone.card.input.std` must be a list of 3 "
                                                                r"numbers.*each > 0"),
    (_set("lanczos9", "backbone", "card", "input", "interpolation"), r"`backbone.card.input.interpolation`"),
    (_set([], "backbone"), r"`backbone` must be an object, got \[\] \(list\)"),
    (_drop("backbone", "name"), r"`backbone.name` must be a non-empty string"),
    (_set("yes", "backbone", "trained"), r"`backbone.trained` must be true or false"),
    (_drop("backbone", "fingerprint"), r"`backbone.fingerprint` must be 16 lowercase hex digits"),
    (_set("audio", "backbone", "card", "modality"), r"`backbone.card.modality` must be one of 'image', 'text'"),
    (_set("eval", "head", "type"), r"`head.type` must be one of 'linear'"),
    (_set("3072", "head", "in_features"), r"`head.in_features` must be an integer >= 1, got \"3072\" \(str\)"),
    (_set(10, "head", "in_features"), r"`head.in_features` must be the backbone's feature size 3072"),
    (_set(True, "head", "num_classes"), r"`head.num_classes` must be an integer >= 1, got true \(bool\)"),
])
def test_malformed_metadata_is_a_clear_error(pixel_model, change, message) -> None:
    _edit(pixel_model, change)
    with pytest.raises(ArtifactError, match=message) as info:
        headstart.load(pixel_model)
    assert "headstart.json" in str(info.value) and "Fix: " in str(info.value)


def test_text_max_length_is_validated_against_the_backbone(bert_model) -> None:
    _edit(bert_model, _set(1, "backbone", "card", "input", "max_length"))
    with pytest.raises(ArtifactError, match=r"`backbone.card.input.max_length` must be an integer from 2"):
        headstart.load(bert_model)
    _edit(bert_model, _set(100_000, "backbone", "card", "input", "max_length"))
    with pytest.raises(ArtifactError, match=r"max_length` is 100000, above the 128 tokens"):
        headstart.load(bert_model)


def test_valid_metadata_still_loads(pixel_model) -> None:
    model = headstart.load(pixel_model)
    assert model.label_names == ["a", "b", "c"] and model.predict_proba(_images()).shape == (4, 3)


# -- model.safetensors: never unpickled, damage is an ArtifactError --------------------------------
class _Boom:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))  # unpickling would create the marker file


def test_truncated_or_pickled_weights_are_clear_errors(pixel_model, tmp_path) -> None:
    weights = pixel_model / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(ArtifactError, match="model.safetensors is not a readable safetensors file"):
        headstart.load(pixel_model)
    marker = tmp_path / "unpickled"
    weights.write_bytes(pickle.dumps({"head.weight": _Boom(str(marker))}))
    with pytest.raises(ArtifactError, match="not a readable safetensors file.*never|only as safetensors"):
        headstart.load(pixel_model)
    assert not marker.exists()
    from safetensors.torch import save_file

    save_file({"head.weight": torch.zeros(2, 2)}, str(weights))  # valid file, wrong tensors
    with pytest.raises(ArtifactError, match="does not hold the linear head"):
        headstart.load(pixel_model)


# -- ONNX exports: file names confined to the export folder ---------------------------------------
def _export_folder(root: Path, files: dict) -> Path:  # type: ignore[type-arg]
    folder = root / "run" / "onnx"
    folder.mkdir(parents=True)
    card = create_backbone("raw-pixels").card.to_dict()
    (folder / "export.json").write_text(json.dumps({"modality": "image", "labels": ["a", "b"], "card": card,
                                                    "files": files}))
    return folder


@pytest.mark.parametrize("name,message", [("../../outside.onnx", "leads outside the folder"),
                                          ("{abs}", "absolute path"),
                                          (["model.onnx"], "must be a file name inside the folder")])
def test_onnx_export_file_names_stay_in_the_folder(tmp_path, name, message) -> None:
    pytest.importorskip("onnxruntime")
    from headstart.export.onnx import OnnxPredictor

    outside = tmp_path / "outside.onnx"
    outside.write_bytes(b"not read")
    folder = _export_folder(tmp_path, {"fp32": str(outside) if name == "{abs}" else name})
    with pytest.raises(ArtifactError, match=message):
        OnnxPredictor(folder)


def test_onnx_export_symlink_and_bad_fields(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from headstart.export.onnx import OnnxPredictor

    (tmp_path / "elsewhere.onnx").write_bytes(b"x")
    folder = _export_folder(tmp_path, {"fp32": "model.onnx"})
    (folder / "model.onnx").symlink_to(tmp_path / "elsewhere.onnx")
    with pytest.raises(ArtifactError, match="leads outside the folder"):
        OnnxPredictor(folder)
    (folder / "model.onnx").unlink()
    (folder / "model.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(ArtifactError, match="not an ONNX graph that ONNX Runtime can run"):
        OnnxPredictor(folder)
    info = json.loads((folder / "export.json").read_text())
    info["card"]["input"]["image_size"] = 1
    (folder / "export.json").write_text(json.dumps(info))
    with pytest.raises(ArtifactError, match=r"`card.input.image_size` must be an integer from 16"):
        OnnxPredictor(folder)


# -- ONNX Runtime telemetry --------------------------------------------------------------------------
_SESSION = textwrap.dedent("""
    import sys
    import onnx
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, sys.argv[1])
    if sys.argv[2] == "headstart":
        from headstart.engine import cpu_session
        cpu_session(sys.argv[1])
    else:
        import onnxruntime as ort
        ort.disable_telemetry_events()
        ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
""")


def _telemetry_files(tmp_path: Path, how: str) -> list[str]:
    home = tmp_path / how
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    subprocess.run([sys.executable, "-c", _SESSION, str(tmp_path / f"{how}.onnx"), how], env=env, check=True,
                   timeout=120)
    return sorted(str(p.relative_to(home)) for p in home.rglob("*"))


@pytest.mark.slow
def test_onnx_runtime_sessions_start_no_telemetry(tmp_path) -> None:
    """ONNX Runtime's telemetry writes a device id and an event store under ~/.cache/Microsoft when it
    starts, then looks up its collector; disable_telemetry_events() does not stop it, and headstart's
    sessions must never start it."""
    pytest.importorskip("onnxruntime")
    bare = _telemetry_files(tmp_path, "bare")
    if not any("onnxruntime" in p for p in bare):
        pytest.skip("this onnxruntime build has no telemetry")
    assert _telemetry_files(tmp_path, "headstart") == []


def test_hub_id_in_the_local_cache_loads_offline_and_stays_a_hub_id(bert_model, bert_copy, tmp_path,
                                                                    monkeypatch) -> None:
    """A model that names a hub id loads from the local Hugging Face cache, never from a folder of
    the same name in the working directory, and saving it again records the id, not a cache path."""
    import huggingface_hub.constants

    from headstart.features import weights_fingerprint

    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--tiny-bert" / "snapshots" / "0123abc"
    shutil.copytree(bert_copy, snapshot)
    (cache / "models--acme--tiny-bert" / "refs").mkdir()
    (cache / "models--acme--tiny-bert" / "refs" / "main").write_text("0123abc")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    bb = create_backbone(f"hf:{bert_copy}")
    _edit(bert_model, lambda m: m["backbone"].update(
        name="hf:acme/tiny-bert", fingerprint=weights_fingerprint(bb, name="hf:acme/tiny-bert")))
    shutil.rmtree(bert_model / "backbone")
    decoy = tmp_path / "cwd" / "acme" / "tiny-bert"
    shutil.copytree(bert_copy, decoy)
    (decoy / "modeling_evil.py").write_text("raise SystemExit('decoy used')\n")
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("network lookup at load"))
    loaded = headstart.load(bert_model)
    assert loaded.backbone.card.name == "hf:acme/tiny-bert" and loaded.backbone.hub_id == "acme/tiny-bert"
    again = loaded.save(tmp_path / "again")
    assert json.loads((again / "headstart.json").read_text())["backbone"]["name"] == "hf:acme/tiny-bert"
    assert not (again / "backbone").exists()


@pytest.mark.slow
def test_an_export_that_does_not_match_its_model_is_refused(tmp_path) -> None:
    """export.json's labels and input size must be the model's: otherwise the server would answer with
    the wrong names or feed inputs of the wrong size."""
    import json as _json

    import headstart
    from headstart.errors import ArtifactError
    from headstart.export.onnx import OnnxPredictor, export_onnx

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (24, 24, 3), dtype=np.uint8) for _ in range(30)]
    labels = ["a" if i % 2 else "b" for i in range(30)]
    run = tmp_path / "run"
    headstart.fit(images, labels, backbone="efficientnet-lite0", image_size=32, out=run, progress=False,
                  baseline=False)
    from PIL import Image

    export_onnx(run, [Image.fromarray(a) for a in images[:8]])
    OnnxPredictor.from_run(run)  # as exported: fine
    meta_file = run / "onnx" / "export.json"
    good = meta_file.read_text()
    for edit, field in ((lambda m: m.__setitem__("labels", ["0", "0"]), "labels"),
                        (lambda m: m["card"]["input"].__setitem__("image_size", 64), "card.input")):
        meta = _json.loads(good)
        edit(meta)
        meta_file.write_text(_json.dumps(meta))
        with pytest.raises(ArtifactError, match=field.replace(".", r"\.")):
            OnnxPredictor.from_run(run)
