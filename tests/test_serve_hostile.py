"""The REST server under hostile input: every case costs bounded memory and time, fails only its
own request with a 4xx that names the item, and never stalls /health or blocks shutdown.

Fast: the app is built around a stub predictor (no model to train); one real process checks the
connection cap, the header timeout and SIGTERM.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from headstart.backbones.base import BackboneCard, InputSpec, resize_crop
from headstart.errors import ConfigError
from headstart.serve import Limits
from headstart.serve.app import build_app, create_app, shrink, square_side
from headstart.serve.batching import Batcher, ServerClosing

LABELS = ["a", "b"]


class Stub:
    """A predictor: probability of "b" = 1 for every item; texts containing "boom" make it raise."""

    name = "stub"

    def __init__(self, modality: str) -> None:
        self.modality, self.label_names, self.seen = modality, LABELS, []

    def __call__(self, items: list) -> np.ndarray:
        self.seen.extend(items)
        if any(isinstance(x, str) and "boom" in x for x in items):
            raise RuntimeError("the model cannot take this item")
        return np.tile([0.0, 1.0], (len(items), 1))


def meta(modality: str, spec: InputSpec | None = None) -> dict:
    card = BackboneCard(name="stub", modality=modality, feature_dim=4, source="test", license="n/a",
                        input=spec or InputSpec(image_size=32, crop_pct=0.875, mean=(0.5,) * 3, std=(0.5,) * 3))
    return {"labels": LABELS, "backbone": {"name": "stub", "card": card.to_dict()}, "format_version": 1}


def client(modality: str, **kwargs):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    return TestClient(build_app(Stub(modality), meta(modality), **kwargs), raise_server_exceptions=False)


def png_header(w: int, h: int) -> bytes:
    """A PNG that declares w x h pixels and holds none: what an attacker sends costs a few bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def encode(img: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return base64.b64encode(buf.getvalue()).decode()


def post_json(c, raw: bytes):  # type: ignore[no-untyped-def]
    return c.post("/predict", content=raw, headers={"content-type": "application/json"})


# -- texts ------------------------------------------------------------------------------------------

def test_lone_surrogate_is_a_422_naming_the_item() -> None:
    with client("text") as c:
        r = post_json(c, b'{"texts": ["fine", "\\ud800 x"]}')
        assert r.status_code == 422 and r.json()["error"]["code"] == "bad_text"
        assert "texts[1]" in r.json()["error"]["message"] and "surrogate" in r.json()["error"]["message"]
        assert post_json(c, b'{"texts": ["  \\t "]}').status_code == 422  # whitespace only: refused too
        assert c.post("/predict", json={"texts": ["fine"]}).status_code == 200


def test_a_failing_request_does_not_fail_the_requests_batched_with_it() -> None:
    stub = Stub("text")

    async def main() -> list:
        batcher = Batcher(stub, max_batch=32, max_wait_s=0.05)
        batcher.start()
        results = await asyncio.gather(batcher.submit(["x"]), batcher.submit(["boom"]), batcher.submit(["y", "z"]),
                                       return_exceptions=True)
        await batcher.stop()
        return [results, batcher.batches]

    (ok1, bad, ok2), batches = asyncio.run(main())
    assert stub.seen[:4] == ["x", "boom", "y", "z"]  # they did share a batch
    assert isinstance(bad, RuntimeError)
    assert ok1.shape == (1, 2) and ok2.shape == (2, 2)


def test_stop_answers_queued_requests_instead_of_leaving_them_hanging() -> None:
    async def main() -> object:
        batcher = Batcher(Stub("text"), max_batch=32, max_wait_s=1.0)
        pending = asyncio.ensure_future(batcher.submit(["x"]))  # the worker is not running: it stays queued
        await asyncio.sleep(0)
        await batcher.stop()
        return await asyncio.gather(pending, return_exceptions=True)

    assert isinstance(asyncio.run(main())[0], ServerClosing)


# -- JSON -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,code", [
    (b"[" * 200_000, "json_too_deep"),
    (b'{"texts": ' + b"[" * 40 + b"]" * 40 + b"}", "json_too_deep"),
    (b'{"texts": [' + b"7" * 5000 + b"]}", "number_too_long"),
    (b'{"texts": [1.' + b"5" * 5000 + b"]}", "number_too_long"),
    (b'{"texts": ["\xff"]}', "malformed_json"),
], ids=["200000 deep", "40 deep", "5000-digit integer", "5000-digit float", "invalid utf-8"])
def test_hostile_json_is_a_400_not_a_500(raw: bytes, code: str) -> None:
    with client("text") as c:
        r = post_json(c, raw)
        assert r.status_code == 400 and r.json()["error"]["code"] == code, r.text


# -- images -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("w,h,words", [
    (20_000, 20_000, "too large"),  # over PIL's own bomb limit: refused as too large, not "unreadable"
    (6_000, 6_000, "36000000 pixels"),
    (1_000_000, 10, "aspect ratio"),  # few pixels, but the resize would make 256 x 25.6 M of them
    (10, 1_000, "aspect ratio"),
])
def test_images_too_large_are_refused_from_the_header(w: int, h: int, words: str) -> None:
    with client("image") as c:
        r = c.post("/predict", json={"images": [encode(Image.new("L", (8, 8))),
                                                base64.b64encode(png_header(w, h)).decode()]})
        assert r.status_code == 413 and r.json()["error"]["code"] == "image_too_large", r.text
        assert "images[1] is too large" in r.json()["error"]["message"] and words in r.json()["error"]["message"]
        files = {"files": ("bomb.png", png_header(w, h), "image/png")}
        assert c.post("/predict", files=files).status_code == 413


def test_large_jpeg_is_decoded_small_and_large_png_refused() -> None:
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (1000, 1200, 3), dtype=np.uint8))
    with client("image", limits=Limits(max_image_pixels=1_000_000)) as c:
        assert c.post("/predict", json={"images": [encode(photo, "JPEG")]}).status_code == 200
        assert c.post("/predict", json={"images": [encode(photo, "PNG")]}).status_code == 413


@pytest.mark.parametrize("crop_pct,interpolation", [(0.875, "bicubic"), (1.0, "bilinear"), (0.95, "nearest")])
def test_shrinking_on_arrival_gives_the_same_pixels_as_the_full_image(crop_pct: float, interpolation: str) -> None:
    spec = InputSpec(image_size=32, crop_pct=crop_pct, interpolation=interpolation)
    rng = np.random.default_rng(1)
    for w, h in [(37, 53), (300, 20), (20, 300), (999, 1000), (33, 33), (5, 7)]:
        for mode in ("RGB", "L", "RGBA", "P"):
            img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)
            small = shrink(img, spec)
            assert small.size == (square_side(spec), square_side(spec))
            assert np.array_equal(resize_crop(small, spec), resize_crop(img, spec)), (w, h, mode)


def test_image_requests_hold_shrunk_images_only() -> None:
    stub = Stub("image")
    from fastapi.testclient import TestClient

    with TestClient(build_app(stub, meta("image"))) as c:
        r = c.post("/predict", json={"images": [encode(Image.new("RGB", (2000, 1500), "red"))] * 3})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 3
        assert [im.size for im in stub.seen] == [(37, 37)] * 3  # round(32 / 0.875): what the crop reads
        assert c.get("/metadata").json()["limits"]["max_items"] == 64


def test_health_answers_while_images_decode(monkeypatch) -> None:
    """Decoding is off the event loop: /health returns while a decode is held up."""
    import headstart.serve.app as app_mod

    release, started = threading.Event(), threading.Event()
    real = app_mod.decode_image

    def held(*args, **kwargs):  # type: ignore[no-untyped-def]
        started.set()
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(app_mod, "decode_image", held)
    app = build_app(Stub("image"), meta("image"))

    async def main() -> tuple[int, int, bool]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            predict = asyncio.ensure_future(c.post("/predict", json={"images": [encode(Image.new("L", (9, 9)))]}))
            while not started.is_set():
                await asyncio.sleep(0.01)
            health = await asyncio.wait_for(c.get("/health"), 5)  # times out if the loop is blocked
            still_waiting = not predict.done()
            release.set()
            return health.status_code, (await predict).status_code, still_waiting

    assert asyncio.run(main()) == (200, 200, True)


# -- options, token, everyday use -------------------------------------------------------------------

@pytest.mark.parametrize("args,words", [
    (["--max-items", "-1"], "--max-items"), (["--max-body-mb", "-1"], "--max-body-mb"), (["--port", "-5"], "--port"),
    (["--max-wait-ms", "1e9"], "--max-wait-ms"), (["--max-batch", "0"], "--max-batch"),
    (["--host", "0.0.0.0"], "--token"),
])
def test_bad_options_are_refused_before_anything_loads(args: list[str], words: str, tmp_path: Path, capsys) -> None:
    from headstart.cli.main import main

    os.environ.pop("HEADSTART_TOKEN", None)
    with pytest.raises(SystemExit) as exc:
        main(["serve", str(tmp_path / "no-such-run"), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_library_limits_are_validated() -> None:
    with pytest.raises(ConfigError, match="max_items"):
        Limits(max_items=-1)
    with pytest.raises(ConfigError, match="max_wait_ms"):
        create_app("no-such-run", max_wait_ms=1e9)


def test_token_is_required_on_everything_but_health() -> None:
    with client("text", token="s3cret") as c:
        assert c.get("/health").status_code == 200
        r = c.post("/predict", json={"texts": ["x"]})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert c.get("/metadata", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/predict", json={"texts": ["x"]}, headers={"authorization": "Bearer s3cret"}).status_code == 200


def test_root_points_to_docs_and_each_request_is_logged(caplog) -> None:
    import logging

    with client("text") as c, caplog.at_level(logging.INFO, logger="headstart.serve"):
        r = c.get("/", follow_redirects=False)
        assert r.status_code in (302, 307) and r.headers["location"] == "/docs"
        c.post("/predict", json={"texts": ["x", "y"]})
        post_json(c, b"[" * 100)
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "headstart.serve"]
    assert any(line.startswith("POST /predict 200 ") and line.endswith("items=2") for line in lines), lines
    assert any(line.startswith("POST /predict 400 ") and line.endswith("items=-") for line in lines), lines


# -- the real process: connection cap, header timeout, SIGTERM --------------------------------------

SERVER = """
import sys
sys.path.insert(0, {tests!r})
from test_serve_hostile import Stub, meta
from headstart.serve.app import build_app
from headstart.serve.server import run
app = build_app(Stub("text"), meta("text"), max_wait_ms=1000)
run(app, "127.0.0.1", {port}, max_connections=16, header_timeout_s=1.0, on_started=lambda cap: print("up", cap, flush=True))
"""


def health_over(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while not data.endswith(b'"ok"}'):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.slow
def test_real_server_caps_connections_times_out_silence_and_exits_0_on_sigterm() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    code = SERVER.format(tests=str(Path(__file__).parent), port=port)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    idle: list[socket.socket] = []
    try:
        assert proc.stdout is not None and proc.stdout.readline().split() == ["up", "16"]
        silent = socket.create_connection(("127.0.0.1", port))
        silent.settimeout(10)
        assert silent.recv(1) == b""  # closed by the server after the header timeout
        silent.close()
        kept = socket.create_connection(("127.0.0.1", port))  # a keep-alive client between two requests
        kept.settimeout(10)
        assert health_over(kept).startswith(b"HTTP/1.1 200")
        for _ in range(40):  # 2.5x the cap, all idle: the oldest are closed to make room
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            idle.append(sock)
        assert httpx.get(url + "/health", timeout=5).status_code == 200
        # Silent and half-sent connections were closed first, not this one.
        assert health_over(kept).startswith(b"HTTP/1.1 200")
        idle.append(kept)
        # A request waiting for its batch (max-wait 1 s) while SIGTERM arrives: clean exit, code 0.
        waiting = threading.Thread(target=lambda: httpx.post(url + "/predict", json={"texts": ["x"]}, timeout=10))
        waiting.start()
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        waiting.join(10)
    finally:
        for sock in idle:
            sock.close()
        if proc.poll() is None:
            proc.kill()
