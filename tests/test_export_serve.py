"""ONNX export with its parity guarantee, and the real REST server under every bad input."""

from __future__ import annotations

import base64
import io
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import headstart
from headstart.errors import ArtifactError, ConfigError
from headstart.export.onnx import OnnxPredictor, export_onnx


# -- fixtures: one text and one image run, exported once --------------------------------------------

@pytest.fixture(scope="module")
def text_run(tmp_path_factory, bbc_small) -> Path:
    out = tmp_path_factory.mktemp("serve") / "text"
    headstart.fit(bbc_small, backbone="minilm-l6", max_length=64, out=out, progress=False)
    return out


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, mnist_small) -> Path:
    out = tmp_path_factory.mktemp("serve") / "image"
    headstart.fit(mnist_small.subset(range(0, 600, 3)), backbone="efficientnet-lite0", image_size=64, out=out,
                  progress=False)
    return out


@pytest.fixture(scope="module")
def text_export(text_run, bbc_small) -> dict:
    return export_onnx(text_run, bbc_small.items[100:130], quantize="int8")


# -- export -----------------------------------------------------------------------------------------

def test_text_export_parity_fp32_and_int8(text_run, text_export, bbc_small) -> None:
    assert text_export["parity"]["fp32"]["max_abs_diff"] < 1e-4
    assert text_export["parity"]["fp32"]["top1_agreement"] == 1.0
    assert text_export["parity"]["int8"]["top1_agreement"] >= 0.95
    for variant in ("fp32", "int8"):
        runner = OnnxPredictor.from_run(text_run, variant)
        # Dynamic batch and sequence length: any number of texts of any length.
        texts = ["short", "a considerably longer text about the economy and the markets " * 3, "third"]
        onnx_p = runner.predict_proba(texts)
        torch_p = headstart.load(text_run).predict_proba(texts)
        assert onnx_p.shape == (3, 5)
        assert np.abs(onnx_p - torch_p).max() < (1e-4 if variant == "fp32" else 0.2)
    assert {"batch_1", "batch_32"} <= set(text_export["speed"])


def test_image_export_fp32_parity(image_run, mnist_small) -> None:
    images = [mnist_small.load(i) for i in range(1, 40, 2)]
    report = export_onnx(image_run, images)
    assert report["parity"]["fp32"]["max_abs_diff"] < 1e-4 and report["parity"]["fp32"]["top1_agreement"] == 1.0
    runner = OnnxPredictor.from_run(image_run)
    big = Image.new("RGB", (300, 200), "white")  # any size in: resize + crop happen before the graph
    assert runner.predict_proba([big, images[0]]).shape == (2, 10)


def test_failed_parity_is_an_error_and_keeps_the_previous_export(text_run, text_export, bbc_small, monkeypatch) -> None:
    import headstart.export.onnx as onnx_mod

    before = (text_run / "onnx" / "export.json").read_text()
    monkeypatch.setitem(onnx_mod.TOLERANCES, "fp32", onnx_mod.Tolerance(-1.0, 1.0))  # impossible to meet
    with pytest.raises(ArtifactError, match="parity check failed"):
        export_onnx(text_run, bbc_small.items[:5])
    assert (text_run / "onnx" / "export.json").read_text() == before
    assert [p.name for p in text_run.parent.iterdir() if p.name.startswith(".")] == []


def test_export_of_onnx_backbone_model_is_refused(tmp_path, bbc_small) -> None:
    out = tmp_path / "onnx-backbone"
    headstart.fit(bbc_small, backbone="minilm-l3-onnx", out=out, progress=False, baseline=False)
    with pytest.raises(ConfigError, match="cannot be exported: it is not a torch network"):
        export_onnx(out, bbc_small.items[:3])


# -- the real server --------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, run: Path, *extra: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "headstart", "serve", str(run), "--port", str(self.port),
                                      "--max-items", "8", "--max-body-mb", "1", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stdout.read() if self.proc.stdout else "server died")
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def text_server(text_run, text_export):
    server = Server(text_run)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def image_server(image_run):
    server = Server(image_run, "--engine", "torch")
    yield server
    server.stop()


def _png(size=(40, 40), color="black") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def test_text_server_predicts_and_describes_itself(text_server, bbc_small) -> None:
    r = httpx.post(text_server.url + "/predict", json={"texts": bbc_small.items[:3]}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["engine"] == "onnx-fp32" and len(body["predictions"]) == 3
    assert [p["label"] for p in body["predictions"]] == bbc_small.labels[:3]
    meta = httpx.get(text_server.url + "/metadata").json()
    assert meta["labels"] == ["business", "entertainment", "politics", "sports", "tech"]
    assert meta["backbone"]["name"] == "minilm-l6" and meta["metrics"]["test"]["accuracy"] > 0.8
    assert httpx.get(text_server.url + "/docs").status_code == 200
    assert "/predict" in httpx.get(text_server.url + "/openapi.json").json()["paths"]


TEXT_BAD = [
    # (description, request kwargs, status, error code, words in the message)
    ("malformed JSON", {"content": b'{"texts": [', "headers": {"content-type": "application/json"}}, 400, "malformed_json", "not valid JSON"),
    ("unsupported content type", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type", "text/plain"),
    ("no content type", {"content": b"hello"}, 415, "unsupported_media_type", "(none)"),
    ("too many items", {"json": {"texts": ["a"] * 9}}, 413, "too_many_items", "limit is 8"),
    ("text too long", {"json": {"texts": ["x" * 20_001]}}, 422, "text_too_long", "texts[0] has 20001 characters"),
    ("empty text", {"json": {"texts": ["ok", "  "]}}, 422, "bad_text", "texts[1]"),
    ("non-string text", {"json": {"texts": [3]}}, 422, "bad_text", "texts[0]"),
    ("empty list", {"json": {"texts": []}}, 422, "invalid_request", "non-empty list"),
    ("unknown field", {"json": {"documents": ["a"]}}, 422, "invalid_request", '"texts"'),
    ("not an object", {"json": ["a", "b"]}, 422, "invalid_request", '"texts"'),
    ("images to a text model", {"json": {"images": ["aGk="]}}, 422, "wrong_modality", "takes texts"),
    ("multipart to a text model", {"files": {"files": ("a.png", b"x", "image/png")}}, 422, "wrong_modality", "takes texts"),
    ("body over the limit", {"content": b"{" + b" " * (1024 * 1024 + 10) + b"}", "headers": {"content-type": "application/json"}},
     413, "body_too_large", "larger than"),
]


@pytest.mark.parametrize("case", TEXT_BAD, ids=[c[0] for c in TEXT_BAD])
def test_text_server_rejects_bad_input(text_server, case) -> None:
    _, kwargs, status, code, words = case
    r = httpx.post(text_server.url + "/predict", timeout=60, **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and words in r.json()["error"]["message"]


def test_chunked_body_over_the_limit(text_server) -> None:
    def chunks():
        yield b'{"texts": ["'
        for _ in range(300):
            yield b"x" * 4096
        yield b'"]}'

    r = httpx.post(text_server.url + "/predict", content=chunks(), headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


def test_image_server_accepts_multipart_and_base64(image_server) -> None:
    files = [("files", ("a.png", _png(), "image/png")), ("files", ("b.png", _png(color="white"), "image/png"))]
    r = httpx.post(image_server.url + "/predict", files=files, timeout=60)
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 2 and r.json()["engine"] == "torch"
    b64 = base64.b64encode(_png()).decode()
    r2 = httpx.post(image_server.url + "/predict", json={"images": [b64, "data:image/png;base64," + b64]}, timeout=60)
    assert r2.status_code == 200
    p = r2.json()["predictions"]
    assert p[0] == p[1] == r.json()["predictions"][0]


def _bomb() -> bytes:
    """A 6000 x 6000 PNG that compresses to a few kB: decoding it would take 108 MB."""
    buf = io.BytesIO()
    Image.new("1", (6000, 6000)).save(buf, "PNG")
    return buf.getvalue()


IMAGE_BAD = [
    ("decompression bomb", {"files": [("files", ("bomb.png", _bomb(), "image/png"))]}, 413, "image_too_large", "36000000 pixels"),
    ("not an image", {"files": [("files", ("notes.txt", b"just text", "text/plain"))]}, 422, "bad_image", "file 'notes.txt'"),
    ("truncated image", {"files": [("files", ("cut.png", _png()[:60], "image/png"))]}, 422, "bad_image", "cut.png"),
    ("bad base64", {"json": {"images": ["%%%not base64%%%"]}}, 422, "bad_base64", "images[0]"),
    ("base64 of garbage", {"json": {"images": [base64.b64encode(b"garbage").decode()]}}, 422, "bad_image", "images[0]"),
    ("texts to an image model", {"json": {"texts": ["hello"]}}, 422, "wrong_modality", "takes images"),
    ("multipart without files", {"data": {"note": "x"}, "files": {"other": ("a.png", b"x", "image/png")}}, 422, "invalid_request", "`files`"),
    ("too many files", {"files": [("files", (f"{i}.png", _png(), "image/png")) for i in range(9)]}, 413, "bad_multipart", "many"),
]


@pytest.mark.parametrize("case", IMAGE_BAD, ids=[c[0] for c in IMAGE_BAD])
def test_image_server_rejects_bad_input(image_server, case) -> None:
    _, kwargs, status, code, words = case
    r = httpx.post(image_server.url + "/predict", timeout=60, **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and words in r.json()["error"]["message"]


def test_servers_still_healthy_after_bad_input(text_server, image_server) -> None:
    for server in (text_server, image_server):
        assert httpx.get(server.url + "/health").json() == {"status": "ok"}
        assert server.proc.poll() is None


def test_concurrent_requests_are_batched(text_server, bbc_small) -> None:
    import concurrent.futures as cf

    texts = bbc_small.items[:16]
    single = [httpx.post(text_server.url + "/predict", json={"texts": [t]}, timeout=60).json()["predictions"][0]
              for t in texts[:4]]
    with cf.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda t: httpx.post(text_server.url + "/predict", json={"texts": [t]}, timeout=60),
                                texts))
    assert all(r.status_code == 200 for r in results)
    # Batched answers equal one-at-a-time answers (padding in a batch must not change a text's result).
    for a, b in zip(single, [r.json()["predictions"][0] for r in results[:4]]):
        assert a["label"] == b["label"] and abs(a["confidence"] - b["confidence"]) < 1e-4


@pytest.mark.slow
def test_schemathesis_finds_no_server_errors(text_server, tmp_path) -> None:
    """Property-based requests generated from the server's own OpenAPI schema: no 5xx."""
    exe = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    result = subprocess.run([exe, "run", text_server.url + "/openapi.json", "--checks", "not_a_server_error",
                             "--max-examples", "30", "--seed", "1", "--request-timeout", "60", "--no-color"],
                            capture_output=True, text=True, timeout=900, cwd=tmp_path)  # its cache stays out of the repo
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert httpx.get(text_server.url + "/health").status_code == 200
