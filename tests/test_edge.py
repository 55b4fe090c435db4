"""The edge bundle (``export --target edge``): a predictor that runs without torch or headstart and
gives the export's probabilities; int8 calibration inputs refused with clear errors."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import headstart
from headstart.backbones.base import InputSpec, resize_crop
from headstart.data.dataset import load_image, to_rgb
from headstart.errors import ArtifactError, ConfigError, DataError
from headstart.export import edge_predict
from headstart.export.onnx import OnnxPredictor, export_onnx
from headstart.export.quantize import MIN_CALIBRATION_ITEMS, check_calibration

TEMPLATE = Path(edge_predict.__file__)


# -- the template: fast ---------------------------------------------------------------------------

def test_template_imports_only_the_edge_runtime() -> None:
    tree = ast.parse(TEMPLATE.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports: the file is copied out of the package"
            names.add((node.module or "").split(".")[0])
    allowed = {"__future__", "argparse", "json", "sys", "pathlib", "typing", "numpy", "PIL", "onnxruntime", "tokenizers"}
    assert names <= allowed, names - allowed


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (37, 91, 3), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (50, 30, 4), dtype=np.uint8), "RGBA")
    grey16 = Image.fromarray(rng.integers(0, 65535, (40, 40), dtype=np.uint16))
    floats = Image.fromarray(rng.random((33, 20), dtype=np.float32), "F")
    palette = rgb.convert("P")
    palette.info["transparency"] = 3
    return [rgb, rgba, grey16, floats, palette, rgb.convert("L"), rgb.convert("LA"), Image.new("1", (300, 7))]


@pytest.mark.parametrize("spec", [InputSpec(image_size=64, crop_pct=0.875, mean=(0.5,) * 3, std=(0.5,) * 3),
                                  InputSpec(image_size=31, crop_pct=1.0, mean=(0.5,) * 3, std=(0.5,) * 3,
                                            interpolation="bilinear"),
                                  InputSpec(image_size=16, crop_pct=0.9, mean=(0.5,) * 3, std=(0.5,) * 3,
                                            interpolation="nearest")])
def test_template_preprocessing_is_headstarts(spec) -> None:
    for img in _images():
        ours = resize_crop(to_rgb(img), spec)
        theirs = edge_predict.resize_crop(edge_predict.load_image(img), spec.image_size, spec.crop_pct,
                                          spec.interpolation)
        assert theirs.dtype == np.uint8 and np.array_equal(ours, theirs), img.mode


def test_template_reads_arrays_like_headstart() -> None:
    rng = np.random.default_rng(1)
    for arr in (rng.random((9, 9)), rng.integers(0, 4000, (9, 9)), rng.integers(0, 256, (9, 9, 1)).astype(np.uint8),
                rng.random((9, 9, 3)) > 0.5, rng.normal(size=(9, 9)) * 1000):
        assert np.array_equal(np.asarray(load_image(arr, "x")), np.asarray(edge_predict.load_image(arr)))


# -- bad input, checked before any work: fast -----------------------------------------------------

def test_too_few_calibration_items_is_a_data_error() -> None:
    with pytest.raises(DataError, match=f"has 3 item.*at least {MIN_CALIBRATION_ITEMS}") as err:
        check_calibration(3, "image", "image", "(photos/)")
    assert err.value.fix and "--calibration" in err.value.fix


def test_calibration_of_the_other_modality_is_a_data_error() -> None:
    with pytest.raises(DataError, match="holds texts, but the model takes images") as err:
        check_calibration(500, "image", "text", "(notes.csv)")
    assert "images" in err.value.fix


@pytest.mark.parametrize("kwargs, words", [({"quantize": "int4"}, "`quantize` must be 'int8' or 'int8-qat'"),
                                           ({"target": "phone"}, "`target` must be one of onnx, edge"),
                                           ({"calibration_method": "mse"}, "`calibration_method` must be one of")])
def test_bad_export_options_are_config_errors(tmp_path, kwargs, words) -> None:
    with pytest.raises(ConfigError, match=words):
        export_onnx(tmp_path / "no-run", ["x"], **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_qat_epochs_need_int8_qat(tmp_path) -> None:
    for kwargs in ({"quantize": "int8", "qat_epochs": 2}, {"quantize": "int8-qat", "qat_epochs": 0}):
        with pytest.raises(ConfigError, match="`qat_epochs`"):
            export_onnx(tmp_path / "no-run", ["x"], **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_mixup_blends_two_training_images() -> None:
    from headstart.export.quantize import mixup

    a = np.zeros((2, 4, 4, 3), np.uint8)
    a[1] = 200
    blends = mixup(a, 50)
    assert blends.shape == (50, 4, 4, 3) and blends.dtype == np.uint8
    pure = (blends == 0).all((1, 2, 3)) | (blends == 200).all((1, 2, 3))
    mixed = blends[~pure]
    assert len(mixed) and ((mixed >= 0.3 * 200 - 1) & (mixed <= 0.7 * 200 + 1)).all()


def test_image_int8_bar_is_agreement_and_accuracy() -> None:
    from headstart.export.onnx import _passes, tolerance

    bar = tolerance("int8", "image")
    ok = {"max_abs_diff": 0.6, "top1_agreement": 0.995}
    assert _passes(ok, bar)  # unlabelled items: agreement only; |dp| of a borderline item does not count
    assert not _passes({**ok, "top1_agreement": 0.985}, bar)
    assert _passes({**ok, "accuracy_torch": 0.92, "accuracy": 0.915}, bar)
    assert not _passes({**ok, "accuracy_torch": 0.92, "accuracy": 0.905}, bar)  # 1.5 points lower
    assert not _passes({"max_abs_diff": 0.3, "top1_agreement": 1.0}, tolerance("int8", "text"))


# -- with real runs: slow -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image_run(tmp_path_factory, mnist_small) -> Path:
    out = tmp_path_factory.mktemp("edge") / "image"
    headstart.fit(mnist_small.subset(range(0, 600, 3)), backbone="efficientnet-lite0", image_size=64, out=out,
                  progress=False, baseline=False)
    return out


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, bbc_small) -> Path:
    out = tmp_path_factory.mktemp("edge") / "text"
    headstart.fit(bbc_small, backbone="minilm-l6", max_length=64, out=out, progress=False, baseline=False)
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def image_edge(image_run, mnist_small) -> dict:
    images = [mnist_small.load(i) for i in range(1, 80, 4)]
    return export_onnx(image_run, images, target="edge")


@pytest.fixture(scope="module")
def text_edge(text_run, bbc_small) -> dict:
    return export_onnx(text_run, bbc_small.items[100:130], quantize="int8", target="edge")


@pytest.mark.slow
def test_edge_bundle_holds_model_json_and_predictor(image_run, image_edge, text_run, text_edge) -> None:
    for run, report, variant in ((image_run, image_edge, "fp32"), (text_run, text_edge, "int8")):
        edge = run / "onnx" / "edge"
        config = json.loads((edge / "edge.json").read_text())
        assert config["variant"] == variant and config["labels"] == headstart.load(run).label_names
        assert (edge / "predict.py").read_text() == TEMPLATE.read_text()
        assert (edge / "model.onnx").read_bytes() == (run / "onnx" / report["files"][variant]).read_bytes()
        assert report["edge"]["max_abs_diff_vs_export"] <= 1e-5
    image_config = json.loads((image_run / "onnx" / "edge" / "edge.json").read_text())
    assert image_config["preprocessing"]["image_size"] == 64 and image_config["preprocessing"]["crop_pct"] == 0.875
    assert (text_run / "onnx" / "edge" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_bad_calibration_is_refused_and_the_export_kept(image_run, image_edge, mnist_small, bbc_small) -> None:
    before = _snapshot(image_run / "onnx")
    images = [mnist_small.load(i) for i in range(3)]
    with pytest.raises(DataError, match="at least"):
        export_onnx(image_run, images, quantize="int8", calibration=[mnist_small.load(i) for i in range(5)])
    with pytest.raises(DataError, match="holds texts, but the model takes images"):
        export_onnx(image_run, images, quantize="int8", calibration=bbc_small.subset(range(60)))
    with pytest.raises(DataError, match="parity items are texts"):
        export_onnx(image_run, ["some text"] * 3)
    assert _snapshot(image_run / "onnx") == before
    assert [p.name for p in image_run.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_failed_int8_parity_keeps_the_previous_export(image_run, image_edge, mnist_small, monkeypatch) -> None:
    import headstart.export.onnx as onnx_mod

    before = _snapshot(image_run / "onnx")
    monkeypatch.setitem(onnx_mod.IMAGE_TOLERANCES, "int8", onnx_mod.Tolerance(1.0, 1.01, 0.01))  # unreachable
    images = [mnist_small.load(i) for i in range(1, 40, 2)]
    with pytest.raises(ArtifactError, match="int8 parity check failed.*required 1.01"):
        export_onnx(image_run, images, quantize="int8", target="edge",
                    calibration=[mnist_small.load(i) for i in range(300, 400)])
    assert _snapshot(image_run / "onnx") == before


@pytest.mark.slow
def test_unexportable_backbone_is_refused_before_any_work(tmp_path, bbc_small) -> None:
    out = tmp_path / "onnx-backbone"
    headstart.fit(bbc_small, backbone="minilm-l3-onnx", out=out, progress=False, baseline=False)
    with pytest.raises(ConfigError, match="cannot be exported") as err:
        export_onnx(out, bbc_small.items[:3], quantize="int8", target="edge")
    assert "minilm-l6" in err.value.fix
    assert not (out / "onnx").exists()


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with only the edge runtime, installed by pip from the registry
    this machine is configured for (PyPI, or the local mirror that pip.conf names)."""
    venv = tmp_path_factory.mktemp("edge-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    python = venv / "bin" / "python"
    # `make install` downloads the wheels while the network is there; the tests run with it cut off.
    wheels = Path(__file__).resolve().parents[1] / ".venv" / "edge-wheels"
    source = ["--no-index", "--find-links", str(wheels)] if wheels.is_dir() else ["--retries", "0", "--timeout", "20"]
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q", *source,
                          "onnxruntime", "numpy", "pillow", "tokenizers"], capture_output=True, text=True, timeout=900)
    if pip.returncode != 0:
        message = "pip could not install onnxruntime numpy pillow tokenizers: " + pip.stderr[-1500:]
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return python


@pytest.mark.slow
def test_predictor_runs_without_torch_or_headstart(runtime_venv, image_run, image_edge, text_run, text_edge,
                                                   mnist_small, bbc_small, tmp_path) -> None:
    python = str(runtime_venv)
    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    missing = subprocess.run([python, "-c", "import importlib.util as u; "
                              "print([m for m in ('torch', 'headstart', 'transformers') if u.find_spec(m)])"],
                             capture_output=True, text=True, env=clean_env, cwd=tmp_path, check=True)
    assert missing.stdout.strip() == "[]"
    # Images as files of several kinds, as a device would receive them.
    files = []
    for i, img in enumerate([mnist_small.load(k) for k in range(0, 60, 6)] + _images()[:3]):
        path = tmp_path / f"img{i}.png"
        img.save(path)
        files.append(str(path))
    for run, items in ((image_run, files), (text_run, bbc_small.items[:8] + ["short", "ünïcode — text"])):
        edge = run / "onnx" / "edge"
        script = ("import json, sys; sys.path.insert(0, sys.argv[1]); from predict import Predictor; "
                  "items = json.load(open(sys.argv[2])); p = Predictor(sys.argv[1]).predict_proba(items); "
                  "print(json.dumps(p.tolist()))")
        (tmp_path / "items.json").write_text(json.dumps(items))
        result = subprocess.run([python, "-c", script, str(edge), str(tmp_path / "items.json")], capture_output=True,
                                text=True, env=clean_env, cwd=tmp_path, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        got = np.array(json.loads(result.stdout))
        variant = json.loads((edge / "edge.json").read_text())["variant"]
        decoded = [load_image(x, x) for x in items] if run == image_run else items  # headstart's own decoding
        expected = OnnxPredictor.from_run(run, variant).predict_proba(decoded)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-4
        if variant == "fp32":  # and the model's own answers
            torch_p = headstart.load(run).predict_proba(items)
            assert np.abs(got - torch_p).max() < 1e-4
    # The command line: one JSON line per file, labels from edge.json.
    cli = subprocess.run([python, str(image_run / "onnx" / "edge" / "predict.py"), "--top", "2", *files[:3]],
                         capture_output=True, text=True, env=clean_env, cwd=tmp_path, timeout=300)
    assert cli.returncode == 0, cli.stderr[-3000:]
    lines = [json.loads(line) for line in cli.stdout.splitlines()]
    labels = headstart.load(image_run).label_names
    assert [x["input"] for x in lines] == files[:3]
    assert all(x["label"] in labels and len(x["top"]) == 2 for x in lines)


@pytest.mark.slow
def test_int8_qat_tunes_then_is_held_to_the_parity_rule(image_run, image_edge, mnist_small, monkeypatch) -> None:
    import onnx
    import onnxruntime as ort
    import torch

    from headstart.export import onnx as onnx_mod
    from headstart.export.pixel_input import feed_pixels_file
    from headstart.export.qat import QDQSimulation
    from headstart.export.quantize import quantize_image

    held_out = list(range(1, 600, 3))[:60]  # the run was fitted on every third digit from 0
    items, labels = [mnist_small.load(i) for i in held_out], [mnist_small.labels[i] for i in held_out]
    calibration = [mnist_small.load(i) for i in range(0, 600, 3)]
    before = _snapshot(image_run / "onnx")
    monkeypatch.setitem(onnx_mod.IMAGE_TOLERANCES, "int8", onnx_mod.Tolerance(1.0, 1.01, 0.01))  # unreachable
    with pytest.raises(ArtifactError, match="int8 parity check failed.*required 1.01.*Nothing was written"):
        export_onnx(image_run, items, labels=labels, quantize="int8-qat", calibration=calibration, calibration_n=64,
                    qat_epochs=1, target="edge")
    assert _snapshot(image_run / "onnx") == before
    monkeypatch.setitem(onnx_mod.IMAGE_TOLERANCES, "int8", onnx_mod.Tolerance(1.0, 0.0, 1.0))  # the flow, not the bar
    report = export_onnx(image_run, items, labels=labels, quantize="int8-qat", calibration=calibration,
                         calibration_n=64, qat_epochs=2)
    q = report["quantization"]
    qat = q["qat"]
    assert report["quantize"] == "int8-qat" and qat["epochs"] == 2 and qat["items"] == 2 * q["calibration_items"]
    assert len(qat["loss_per_epoch"]) == 2 and [e["epoch"] for e in qat["probe_per_epoch"]] == [0, 1, 2]
    assert q["probe_agreement"] == qat["probe_per_epoch"][-1]["probe_agreement"]  # the graph kept: the last epoch's
    assert q["fp32_layers"] == [] and 0 < q["calibration_items"] <= 64
    folder = image_run / "onnx"
    int8 = folder / "model.int8.onnx"
    graph = onnx.load(str(int8)).graph
    assert not [n for n in graph.node if n.op_type == "Conv" and not any("DequantizeLinear" in x for x in n.input[:1])]
    # EfficientNet-Lite's (x - 127) / 128 is exact on the uint8 grid: the graph reads the pixels itself.
    first = [n for n in graph.node if "pixels" in n.input]
    assert [n.op_type for n in first] == ["Transpose"]
    assert [n.op_type for n in graph.node if first[0].output[0] in n.input] == ["DequantizeLinear"]
    # The same graph and scales as post-training int8 of the same model: only integer weights differ.
    spec = headstart.load(image_run).backbone.card.input
    pixels = np.stack([resize_crop(x, spec) for x in calibration[:64]])
    quantize_image(folder / "model.onnx", folder.parent / "ptq.onnx", pixels[:48], pixels[48:], max_fp32_layers=0)
    assert q["pixels_fed_directly"] and feed_pixels_file(folder.parent / "ptq.onnx")  # as export does after tuning
    ptq = onnx.load(str(folder.parent / "ptq.onnx")).graph
    assert [n.SerializeToString() for n in ptq.node] == [n.SerializeToString() for n in graph.node]
    tuned = {t.name: t.SerializeToString() for t in graph.initializer}
    changed = {t.name for t in ptq.initializer if tuned[t.name] != t.SerializeToString()}
    assert changed and all(name.endswith("_quantized") for name in changed)
    # On the real EfficientNet-Lite graph the simulation is ONNX Runtime's int8, uint8 tensor for uint8 tensor.
    x = np.stack([resize_crop(i, spec) for i in items[:16]])
    model = onnx.load(str(int8))
    names = [n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    for name in names:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UINT8, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    p_ort, *codes = session.run(None, {"pixels": x})
    assert np.array_equal(p_ort, OnnxPredictor(folder, "int8").session.run(None, {"pixels": x})[0])
    sim = QDQSimulation(int8)  # the written integers as they are
    sim.exact = True
    with torch.no_grad():
        run = sim._forward(torch.from_numpy(x))
    for name, c in zip(names, codes):
        assert np.array_equal(run.values[name].numpy(), c.astype(np.float32)), name
    assert np.abs(run.values[sim._output].numpy() - p_ort).max() < 1e-6


@pytest.mark.slow
def test_int8_qat_from_the_command_line(image_run, image_edge, monkeypatch, capsys) -> None:
    from conftest import cli

    from headstart.export import onnx as onnx_mod

    before = _snapshot(image_run / "onnx")
    assert cli("export", str(image_run), "--qat-epochs", "2") == 2  # without --quantize int8-qat
    err = capsys.readouterr().err
    assert "--qat-epochs (2) needs quantize='int8-qat' (--quantize int8-qat)" in err and "add --quantize int8-qat" in err
    assert cli("export", str(image_run), "--n", "0") == 2  # no parity items: refused by the option, data untouched
    assert "0 is not in the range x>=1" in capsys.readouterr().err
    assert _snapshot(image_run / "onnx") == before
    monkeypatch.setitem(onnx_mod.IMAGE_TOLERANCES, "int8", onnx_mod.Tolerance(1.0, 0.0, 1.0))  # the flow, not the bar
    code = cli("export", str(image_run), "--quantize", "int8-qat", "--qat-epochs", "1", "--data", "builtin:mnist:60",
               "--n", "20", "--calibration", "builtin:mnist:60", "--calibration-n", "40")
    output = capsys.readouterr()
    assert code == 0, output.err[-2000:]
    assert "Quantisation-aware tuning of the whole network: 1 epoch(s)" in output.err + output.out
    report = json.loads((image_run / "onnx" / "export.json").read_text())
    assert report["quantize"] == "int8-qat" and report["quantization"]["qat"]["epochs"] == 1
    assert report["files"]["int8"] == "model.int8.onnx" and report["parity"]["int8"]["n"] == 20


@pytest.mark.slow
def test_int8_qat_of_a_text_model_is_refused(text_run, text_edge, bbc_small) -> None:
    before = _snapshot(text_run / "onnx")
    with pytest.raises(ConfigError, match="int8-qat fine-tunes image backbones") as err:
        export_onnx(text_run, bbc_small.items[100:110], quantize="int8-qat")
    assert "--quantize int8" in err.value.fix
    assert _snapshot(text_run / "onnx") == before


def _tiny_edge_folder(folder: Path) -> Path:
    """An edge folder by hand: mean colour -> two labels (no torch, no export)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.array([[0.02, -0.02], [0.0, 0.0], [-0.02, 0.02]], np.float32), "w")
    axes = numpy_helper.from_array(np.array([1, 2], np.int64), "axes")
    nodes = [helper.make_node("Cast", ["pixels"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f", "axes"], ["m"], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["z"]), helper.make_node("Softmax", ["z"], ["probabilities"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["N", 8, 8, 3])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])], [w, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    folder.mkdir(parents=True)
    onnx.save(model, str(folder / "model.onnx"))
    (folder / "edge.json").write_text(json.dumps({
        "format": edge_predict.FORMAT, "format_version": edge_predict.FORMAT_VERSION, "model": "model.onnx",
        "labels": ["red", "blue"], "modality": "image", "variant": "fp32",
        "preprocessing": {"image_size": 8, "crop_pct": 1.0, "interpolation": "bilinear"}}))
    return folder


def test_template_cli_reports_a_bad_file_and_goes_on_and_reads_folders(tmp_path, capsys) -> None:
    folder = _tiny_edge_folder(tmp_path / "edge")
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    Image.new("RGB", (12, 9), (250, 0, 0)).save(images / "red.png")
    Image.new("RGB", (9, 9), (0, 0, 250)).save(images / "sub" / "blue.jpg")
    (images / "notes.txt").write_text("not an image")  # not an image suffix: not read from the folder
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    code = edge_predict.main(["--model", str(folder), str(bad), str(images)])
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert [x["input"] for x in out] == [str(bad), str(images / "red.png"), str(images / "sub" / "blue.jpg")]
    assert "error" in out[0] and "label" not in out[0]
    assert [x["label"] for x in out[1:]] == ["red", "blue"]
    assert edge_predict.main(["--model", str(folder), str(images / "red.png")]) == 0
    assert edge_predict.main(["--model", str(tmp_path), str(images / "red.png")]) == 2  # no edge.json there


def test_template_refuses_an_edge_json_that_does_not_fit_its_model(tmp_path) -> None:
    folder = _tiny_edge_folder(tmp_path / "edge")
    config = json.loads((folder / "edge.json").read_text())
    for change, words in (({"preprocessing": {**config["preprocessing"], "image_size": 16}}, "says 16 px but the model "
                                                                                            "takes 8 px"),
                          ({"labels": ["red", "blue", "green"]}, "lists 3 labels but the model gives 2")):
        (folder / "edge.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(ValueError, match=words):
            edge_predict.Predictor(folder)
    (folder / "edge.json").write_text("{labels: oops")
    with pytest.raises(ValueError, match="edge.json is not valid JSON"):
        edge_predict.Predictor(folder)


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_calibration_takes_a_number_of_images_that_is_not_a_multiple_of_the_batch(tmp_path, method) -> None:
    from test_pixel_input import LITE, _graph

    from headstart.export.quantize import quantize_image

    _graph(tmp_path / "fp32.onnx", *LITE)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (37, 8, 8, 3), dtype=np.uint8)  # 37: prime, so no batch of 16 divides it
    result = quantize_image(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", pixels, pixels[:8], method=method,
                            max_fp32_layers=0)
    assert result["calibration_items"] == 37 and (tmp_path / "int8.onnx").is_file()
