"""The REST app: ``POST /predict``, ``GET /health``, ``GET /metadata``, OpenAPI at ``/docs``.

Every bad input is a 4xx with ``{"error": {"code", "message"}}`` that says what was wrong:
too large a body (413), too many items (413), too many pixels (413: decompression bombs are
refused before decoding), too long a text (422), undecodable images or base64 (422), malformed
JSON (400), an unsupported content type (415). The ONNX export runs when there is one, else torch.
"""


import base64
import binascii
import io
import json
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependencyError
from .batching import Batcher


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 16 * 1024 * 1024
    max_items: int = 64
    max_image_pixels: int = 25_000_000  # 5000 x 5000
    max_text_chars: int = 20_000


class BadInput(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str):  # type: ignore[no-untyped-def]
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class BodyLimit:
    """ASGI middleware: refuse bodies over the limit by header or while streaming (chunked uploads)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_big = f"The request body is larger than {self.limit} bytes."
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            response = _error(413, "body_too_large", too_big)
            return await response(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BadInput(413, "body_too_large", too_big)
            return message

        try:
            await self.app(scope, counted, send)
        except BadInput as exc:
            response = _error(exc.status, exc.code, exc.message)
            await response(scope, receive, send)


def _decode_image(data: bytes, where: str, limits: Limits):  # type: ignore[no-untyped-def]
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size  # header only: nothing decoded yet
    except Exception:
        raise BadInput(422, "bad_image", f"{where} is not an image PIL can read (JPEG, PNG, WebP, BMP, TIFF, GIF).") from None
    if w * h > limits.max_image_pixels:
        raise BadInput(413, "image_too_large", f"{where} has {w}x{h} = {w * h} pixels; the limit is {limits.max_image_pixels}.")
    try:
        img.load()
        return img.convert("RGB")
    except Exception as exc:
        raise BadInput(422, "bad_image", f"{where} cannot be decoded: {type(exc).__name__}.") from None


class TorchEngine:
    name = "torch"

    def __init__(self, run_dir: Path) -> None:
        from ..api import load

        self.model = load(run_dir)
        self.modality = self.model.modality
        self.label_names = self.model.label_names

    def __call__(self, items: list[Any]) -> np.ndarray:
        return self.model.predict_proba(items)  # PIL images or texts, as the request parser gives them


class OnnxEngine:
    def __init__(self, run_dir: Path, variant: str) -> None:
        from ..export.onnx import OnnxPredictor

        self.runner = OnnxPredictor.from_run(run_dir, variant)
        self.name = f"onnx-{variant}"
        self.modality = self.runner.modality
        self.label_names = self.runner.label_names

    def __call__(self, items: list[Any]) -> np.ndarray:
        return self.runner.predict_proba(items)


def make_engine(run_dir: Path, engine: str = "auto", variant: str = "fp32") -> Any:
    if engine == "onnx" or (engine == "auto" and (run_dir / "onnx" / "export.json").is_file()):
        return OnnxEngine(run_dir, variant)
    return TorchEngine(run_dir)


def predict_openapi(limits: Limits) -> dict[str, Any]:
    """The /predict request and response schema, with the server's real limits written in."""
    text = {"type": "string", "minLength": 1, "maxLength": limits.max_text_chars, "pattern": r"\S"}
    return {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {
                "type": "object", "additionalProperties": False,
                "properties": {
                    "texts": {"type": "array", "items": text, "minItems": 1, "maxItems": limits.max_items},
                    "images": {"type": "array", "items": {"type": "string", "description": "base64-encoded image file"},
                               "minItems": 1, "maxItems": limits.max_items}},
                "description": "Exactly one of `texts` (text models) or `images` (image models, base64)."}},
            "multipart/form-data": {"schema": {
                "type": "object", "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                "required": ["files"]}},
        },
    },
    "responses": {
        "200": {"description": "One prediction per input, in order.", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"engine": {"type": "string"}, "predictions": {"type": "array", "items": {
                "type": "object", "properties": {"label": {"type": "string"}, "confidence": {"type": "number"},
                                                 "probabilities": {"type": "object",
                                                                   "additionalProperties": {"type": "number"}}}}}}}}}},
        **{str(code): {"description": text, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
           for code, text in ((400, "Malformed JSON"), (413, "Too large"), (415, "Unsupported content type"),
                              (422, "Invalid input"))},
    },
    }


def create_app(run_dir: str | Path, *, engine: str = "auto", variant: str = "fp32", max_batch: int = 32,
               max_wait_ms: float = 5.0, limits: Limits = Limits()) -> Any:
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from starlette.exceptions import HTTPException
    except ImportError:
        raise MissingDependencyError("fastapi", "`headstart serve`", extra="serve") from None
    from .. import __version__
    from ..export.artifact import read_meta

    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    predictor = make_engine(run_dir, engine, variant)
    batcher = Batcher(predictor, max_batch, max_wait_ms / 1000)

    @asynccontextmanager
    async def lifespan(app: Any):  # type: ignore[no-untyped-def]
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="headstart model server", version=__version__, lifespan=lifespan,
                  description=f"Predictions of the headstart model in `{run_dir.name}` "
                              f"({meta['backbone']['name']}, {len(meta['labels'])} classes).")
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    app.state.batcher = batcher

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, exc: BadInput):  # type: ignore[no-untyped-def]
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):  # type: ignore[no-untyped-def]
        return _error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):  # type: ignore[no-untyped-def]
        return _error(422, "invalid_request", str(exc.errors()[:3]))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        metrics = meta.get("metrics", {})
        return {"labels": meta["labels"], "modality": predictor.modality, "backbone": meta["backbone"]["card"],
                "strategy": meta.get("strategy", {}).get("type"), "engine": predictor.name,
                "metrics": {"test": {k: metrics.get("test", {}).get(k) for k in ("accuracy", "macro_f1", "ece", "n")},
                            "baseline": metrics.get("baseline", {}).get("name"),
                            "transfer_gain": metrics.get("transfer_gain")},
                "limits": asdict(limits), "batching": {"max_batch": max_batch, "max_wait_ms": max_wait_ms},
                "version": __version__, "format_version": meta["format_version"]}

    async def parse_items(request: Request) -> list[Any]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            raw = await request.body()
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise BadInput(400, "malformed_json", f"The body is not valid JSON: {exc}.") from None
            if not isinstance(body, dict) or len(body) != 1 or next(iter(body)) not in ("texts", "images"):
                raise BadInput(422, "invalid_request", 'Send {"texts": [...]} or {"images": [<base64>, ...]}.')
            key, values = next(iter(body.items()))
            if not isinstance(values, list) or not values:
                raise BadInput(422, "invalid_request", f"`{key}` must be a non-empty list.")
            if len(values) > limits.max_items:
                raise BadInput(413, "too_many_items", f"{len(values)} items; the limit is {limits.max_items} per request.")
            wanted = "texts" if predictor.modality == "text" else "images"
            if key != wanted:
                raise BadInput(422, "wrong_modality", f"This model takes {predictor.modality}s; send `{wanted}`, not `{key}`.")
            if key == "texts":
                for i, t in enumerate(values):
                    if not isinstance(t, str) or not t.strip():
                        raise BadInput(422, "bad_text", f"texts[{i}] must be a non-empty string.")
                    if len(t) > limits.max_text_chars:
                        raise BadInput(422, "text_too_long", f"texts[{i}] has {len(t)} characters; "
                                       f"the limit is {limits.max_text_chars}.")
                return values
            images = []
            for i, v in enumerate(values):
                if not isinstance(v, str):
                    raise BadInput(422, "bad_base64", f"images[{i}] must be a base64 string.")
                try:
                    data = base64.b64decode(v.split(",", 1)[-1] if v.startswith("data:") else v, validate=True)
                except (binascii.Error, ValueError):
                    raise BadInput(422, "bad_base64", f"images[{i}] is not valid base64.") from None
                images.append(_decode_image(data, f"images[{i}]", limits))
            return images
        if ctype == "multipart/form-data":
            if predictor.modality != "image":
                raise BadInput(422, "wrong_modality", 'This model takes texts: send JSON {"texts": [...]}.')
            try:
                form = await request.form(max_files=limits.max_items, max_fields=limits.max_items)
            except HTTPException as exc:
                raise BadInput(413 if "many" in str(exc.detail).lower() else 400, "bad_multipart", str(exc.detail)) from None
            except Exception as exc:
                raise BadInput(400, "bad_multipart", f"The multipart body cannot be parsed: {exc}.") from None
            files = [v for k, v in form.multi_items() if k == "files" and hasattr(v, "read")]
            if not files:
                raise BadInput(422, "invalid_request", "Send the images as multipart files in the field `files`.")
            return [_decode_image(await f.read(), f"file '{f.filename}'", limits) for f in files]
        raise BadInput(415, "unsupported_media_type",
                       f"Content type '{ctype or '(none)'}' is not supported; use application/json or multipart/form-data.")

    @app.post("/predict", openapi_extra=predict_openapi(limits))
    async def predict(request: Request) -> dict[str, Any]:
        items = await parse_items(request)
        proba = await batcher.submit(items)
        names = predictor.label_names
        return {"engine": predictor.name, "predictions": [
            {"label": names[int(p.argmax())], "confidence": float(p.max()),
             "probabilities": {n: float(v) for n, v in zip(names, p)}} for p in proba]}

    schema_fn = app.openapi

    def openapi() -> dict[str, Any]:
        schema = schema_fn()
        schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = {
            "type": "object", "properties": {"error": {"type": "object", "properties": {
                "code": {"type": "string"}, "message": {"type": "string"}}}}}
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
