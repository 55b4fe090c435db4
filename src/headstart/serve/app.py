"""The REST app: ``POST /predict``, ``GET /health``, ``GET /metadata``, OpenAPI at ``/docs``.

Every bad input is a 4xx with ``{"error": {"code", "message"}}`` that says what was wrong and,
for a list, which item: too large a body (413), too many items (413), an image too large or too
elongated (413, read from the file's header before anything is decoded), too long a text or one
that is not valid Unicode (422), undecodable images or base64 (422), malformed, too deeply nested
JSON or a too long number (400), an unsupported content type (415), a missing token (401).

Memory is bounded per image, not per file: a decoded image is at most ``max_image_pixels`` x 4
bytes while it is decoded (``decode_threads`` at a time), then it is shrunk at once to the square
the model's resize-and-crop reads (``m x m x 3`` bytes, m = the resize size), bit-identical to
preprocessing the full image. JSON parsing, base64 and image decoding run in a thread pool, so
``/health`` answers while a large request is decoded. The ONNX export runs when there is one, else torch.
"""


import asyncio
import base64
import binascii
import hmac
import io
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, MissingDependencyError
from .batching import Batcher, ServerClosing

logger = logging.getLogger("headstart.serve")

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")  # no decoder that calls out (EPS needs Ghostscript)
MAX_NUMBER_CHARS = 64  # digits of one JSON number; a valid request has none at all
MAX_BATCH = 4096
MAX_WAIT_MS = 1000.0


@dataclass(frozen=True)
class Limits:
    """What one request may cost. Checked once here; the CLI's option ranges say the same."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_items: int = 64
    max_image_pixels: int = 25_000_000  # 5000 x 5000: 100 MB while one decodes (4 bytes a pixel at most)
    max_aspect_ratio: float = 20.0  # the resize scales the shorter side: 1 x 1000000 would become 256 x 256 M
    max_text_chars: int = 20_000
    max_json_depth: int = 32
    max_inflight_body_bytes: int = 256 * 1024 * 1024  # all request bodies being received at once
    decode_threads: int = 2

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"Limits `{f.name}` must be a number >= 1, got {value!r}.",
                                  fix=f"pass a positive `{f.name}`.")
        if self.max_inflight_body_bytes < self.max_body_bytes:
            raise ConfigError(f"Limits `max_inflight_body_bytes` ({self.max_inflight_body_bytes}) must be at least "
                              f"`max_body_bytes` ({self.max_body_bytes}).", fix="raise max_inflight_body_bytes.")


class BadInput(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: refuse bodies over the limit by header or while streaming (chunked uploads),
    and refuse new bodies (503) while the bodies being received together exceed ``inflight`` bytes."""

    def __init__(self, app: Any, limit: int, inflight: int) -> None:
        self.app, self.limit, self.inflight = app, limit, inflight
        self.receiving = 0

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
                n = len(message.get("body", b""))
                seen += n
                self.receiving += n
                if seen > self.limit:
                    raise BadInput(413, "body_too_large", too_big)
                if self.receiving > self.inflight:
                    raise BadInput(503, "busy", f"The server is receiving more than {self.inflight} bytes of requests "
                                                "at once; retry in a moment.")
            return message

        try:
            await self.app(scope, counted, send)
        except BadInput as exc:
            response = _error(exc.status, exc.code, exc.message, {"connection": "close"})
            await response(scope, receive, send)
        finally:
            self.receiving -= seen


class BearerToken:
    """ASGI middleware: every path but ``/health`` needs ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") == "/health":
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if not hmac.compare_digest(given, self.expected):
            response = _error(401, "unauthorized", "Send the server's token as `Authorization: Bearer <token>`.",
                              {"www-authenticate": "Bearer"})
            return await response(scope, receive, send)
        await self.app(scope, receive, send)


class AccessLog:
    """ASGI middleware: one line per request: method, path, status, milliseconds, items."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 0
        scope.setdefault("state", {})

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            items = scope["state"].get("items")
            logger.info("%s %s %d %.1f ms items=%s", scope.get("method"), scope.get("path"), status or 500,
                        (time.perf_counter() - start) * 1000, "-" if items is None else items)


# -- the parts that run in the thread pool ----------------------------------------------------------

def _parse_number(kind: type) -> Any:
    def parse(text: str) -> Any:  # before int(): a 5000-digit integer is a ValueError there, or slow
        if len(text) > MAX_NUMBER_CHARS:
            raise BadInput(400, "number_too_long", f"The body holds a number of {len(text)} characters; numbers "
                                                   f"are limited to {MAX_NUMBER_CHARS} (a request needs none).")
        return kind(text)
    return parse


def parse_json(raw: bytes, max_depth: int) -> Any:
    """JSON with a depth limit and a limit on number length: never a RecursionError or a 500."""
    too_deep = BadInput(400, "json_too_deep", f"The JSON body is nested more than {max_depth} levels deep.")
    try:
        body = json.loads(raw, parse_int=_parse_number(int), parse_float=_parse_number(float))
    except RecursionError:
        raise too_deep from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise BadInput(400, "malformed_json", f"The body is not valid JSON: {exc}.") from None
    stack = [(body, 1)]
    while stack:  # iterative: the depth check itself cannot recurse
        node, depth = stack.pop()
        if depth > max_depth:
            raise too_deep
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return body


def square_side(spec: Any) -> int:
    """Side of the square that ``resize_crop`` reads from its resized image: max(size, size / crop_pct)."""
    return max(int(spec.image_size), int(round(spec.image_size / spec.crop_pct)))


def shrink(img: Any, spec: Any) -> Any:
    """Do ``resize_crop``'s resize now and keep only the centred square its crop reads.

    ``resize_crop`` on the result makes bit-identical pixels to ``resize_crop`` on ``img`` (its
    resize is then a copy and its crop lands on the same pixels), but what is kept per image is
    ``m x m x 3`` bytes (m = :func:`square_side`), whatever the size of the upload.
    """
    from ..backbones.base import _RESAMPLE

    size = int(spec.image_size)
    resize_to = int(round(size / spec.crop_pct))
    if img.mode != "RGB":  # convert() of an RGB image would copy it: 75 MB more for 5000 x 5000
        img = img.convert("RGB")
    w, h = img.size
    scale = resize_to / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), _RESAMPLE[spec.interpolation])
    m = min(nw, nh)
    left = (nw - size) // 2 - (m - size) // 2
    top = (nh - size) // 2 - (m - size) // 2
    return img.crop((left, top, left + m, top + m))


def decode_image(data: bytes, where: str, limits: Limits, spec: Any = None) -> Any:
    """Bytes -> a PIL RGB image, refusing from the header alone what would cost too much to decode."""
    from PIL import Image

    too_large = f"{where} is too large"
    try:
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        w, h = img.size  # header only: nothing decoded yet
    except Image.DecompressionBombError as exc:
        raise BadInput(413, "image_too_large", f"{too_large}: {exc} The limit is {limits.max_image_pixels} "
                                               "pixels.") from None
    except Exception:
        raise BadInput(422, "bad_image", f"{where} is not an image PIL can read "
                                         f"({', '.join(IMAGE_FORMATS)}).") from None
    if w < 1 or h < 1:
        raise BadInput(422, "bad_image", f"{where} has no pixels ({w}x{h}).")
    if img.format == "JPEG" and w * h > limits.max_image_pixels and spec is not None:
        # JPEG can decode at 1/2, 1/4 or 1/8 scale: a large photo is read small, never whole.
        img.draft("RGB", (square_side(spec), square_side(spec)))
        w, h = img.size
    if w * h > limits.max_image_pixels:
        raise BadInput(413, "image_too_large", f"{too_large}: {w}x{h} = {w * h} pixels; the limit is "
                                               f"{limits.max_image_pixels}.")
    if max(w, h) / min(w, h) > limits.max_aspect_ratio:
        raise BadInput(413, "image_too_large", f"{too_large} for its shape: {w}x{h} has an aspect ratio of "
                                               f"{max(w, h) / min(w, h):.0f}:1; the limit is "
                                               f"{limits.max_aspect_ratio:g}:1.")
    try:
        img.load()
        return shrink(img, spec) if spec is not None else img.convert("RGB")
    except Image.DecompressionBombError:
        raise BadInput(413, "image_too_large", f"{too_large}: {w}x{h} pixels.") from None
    except Exception as exc:
        raise BadInput(422, "bad_image", f"{where} cannot be decoded: {type(exc).__name__}.") from None


def decode_base64_image(value: Any, where: str, limits: Limits, spec: Any) -> Any:
    if not isinstance(value, str):
        raise BadInput(422, "bad_base64", f"{where} must be a base64 string.")
    try:
        data = base64.b64decode(value.split(",", 1)[-1] if value.startswith("data:") else value, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(422, "bad_base64", f"{where} is not valid base64.") from None
    return decode_image(data, where, limits, spec)


def check_texts(values: list[Any], limits: Limits) -> list[str]:
    for i, t in enumerate(values):
        if not isinstance(t, str) or not t.strip():
            raise BadInput(422, "bad_text", f"texts[{i}] must be a non-empty string.")
        if len(t) > limits.max_text_chars:
            raise BadInput(422, "text_too_long", f"texts[{i}] has {len(t)} characters; "
                                                 f"the limit is {limits.max_text_chars}.")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate such as "\ud800": no tokenizer can take it
            raise BadInput(422, "bad_text", f"texts[{i}] is not valid Unicode: {exc.reason} "
                                            f"{t[exc.start]!r} at character {exc.start}.") from None
    return values


# -- engines ----------------------------------------------------------------------------------------

class TorchEngine:
    name = "torch"

    def __init__(self, run_dir: Path) -> None:
        from ..api import load

        self.model = load(run_dir)
        self.modality = self.model.modality
        self.label_names = self.model.label_names
        self.ood_threshold = float(self.model.ood.threshold) if self.model.ood is not None else None

    def __call__(self, items: list[Any]) -> np.ndarray:
        # PIL images or texts, as the request parser gives them; with an out-of-scope scorer, its
        # score rides in one extra column so that the micro-batcher keeps passing plain arrays.
        proba, scores, _ = self.model.predict_scored(items)
        return proba if scores is None else np.column_stack([proba, scores])


class OnnxEngine:
    def __init__(self, run_dir: Path, variant: str) -> None:
        from ..export.onnx import OnnxPredictor

        self.runner = OnnxPredictor.from_run(run_dir, variant)
        self.name = f"onnx-{variant}"
        self.ood_threshold = None  # the ONNX graph carries the calibrated classifier, not the OOD scorer
        self.modality = self.runner.modality
        self.label_names = self.runner.label_names

    def __call__(self, items: list[Any]) -> np.ndarray:
        return self.runner.predict_proba(items)


def make_engine(run_dir: Path, engine: str = "auto", variant: str = "fp32") -> Any:
    if engine == "onnx" or (engine == "auto" and (run_dir / "onnx" / "export.json").is_file()):
        return OnnxEngine(run_dir, variant)
    return TorchEngine(run_dir)


def predict_openapi(limits: Limits, max_items: int) -> dict[str, Any]:
    """The /predict request and response schema, with the server's real limits written in."""
    text = {"type": "string", "minLength": 1, "maxLength": limits.max_text_chars, "pattern": r"\S"}
    return {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {
                "type": "object", "additionalProperties": False,
                "properties": {
                    "texts": {"type": "array", "items": text, "minItems": 1, "maxItems": max_items},
                    "images": {"type": "array", "items": {"type": "string", "description": "base64-encoded image file"},
                               "minItems": 1, "maxItems": max_items}},
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
                                                 "unsure": {"type": "boolean", "description": "the input is unlike "
                                                            "the training data (out-of-scope score above threshold)"},
                                                 "ood_score": {"type": "number"},
                                                 "probabilities": {"type": "object",
                                                                   "additionalProperties": {"type": "number"}}}}}}}}}},
        **{str(code): {"description": text, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
           for code, text in ((400, "Malformed JSON"), (401, "Missing or wrong token"), (413, "Too large"),
                              (415, "Unsupported content type"), (422, "Invalid input"), (503, "Busy or shutting down"))},
    },
    }


IMAGE_REQUEST_BYTES = 64 * 1024 * 1024  # shrunk images one request may hold


def image_item_limit(limits: Limits, spec: Any) -> int:
    """Items per image request such that items x (bytes kept per image) <= IMAGE_REQUEST_BYTES."""
    per_item = square_side(spec) ** 2 * 3
    return max(1, min(limits.max_items, IMAGE_REQUEST_BYTES // per_item))


def create_app(run_dir: str | Path, *, engine: str = "auto", variant: str = "fp32", max_batch: int = 32,
               max_wait_ms: float = 5.0, limits: Limits = Limits(), token: str | None = None) -> Any:
    """The FastAPI app serving the model in ``run_dir``; ``token`` makes every path but /health need it."""
    try:
        import fastapi  # noqa: F401
    except ImportError:
        raise MissingDependencyError("fastapi", "`headstart serve`") from None
    from ..artifact import read_meta

    if not 1 <= max_batch <= MAX_BATCH:
        raise ConfigError(f"`max_batch` must be between 1 and {MAX_BATCH}, got {max_batch}.", fix="pass e.g. 32.")
    if not 0 <= max_wait_ms <= MAX_WAIT_MS:
        raise ConfigError(f"`max_wait_ms` must be between 0 and {MAX_WAIT_MS:g}, got {max_wait_ms:g}: every request "
                          "may wait that long for others.", fix="pass e.g. 5.")
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    return build_app(make_engine(run_dir, engine, variant), meta, name=run_dir.name, max_batch=max_batch,
                     max_wait_ms=max_wait_ms, limits=limits, token=token)


def build_app(predictor: Any, meta: dict[str, Any], *, name: str = "model", max_batch: int = 32,
              max_wait_ms: float = 5.0, limits: Limits = Limits(), token: str | None = None) -> Any:
    """The app around any ``predictor`` (callable items -> probabilities, with ``name``, ``modality``
    and ``label_names``) and the run's ``meta``; :func:`create_app` loads both from a run folder."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException
    from starlette.responses import RedirectResponse

    from .._version import __version__
    from ..backbones.base import BackboneCard

    spec = BackboneCard.from_dict(meta["backbone"]["card"]).input if predictor.modality == "image" else None
    max_items = image_item_limit(limits, spec) if spec is not None else limits.max_items
    batcher = Batcher(predictor, max_batch, max_wait_ms / 1000)
    pool = ThreadPoolExecutor(limits.decode_threads, thread_name_prefix="headstart-decode")

    async def off_loop(fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    @asynccontextmanager
    async def lifespan(app: Any):  # type: ignore[no-untyped-def]
        batcher.start()
        yield
        await batcher.stop()
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="headstart model server", version=__version__, lifespan=lifespan,
                  description=f"Predictions of the headstart model in `{name}` "
                              f"({meta['backbone']['name']}, {len(meta['labels'])} classes).")
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes, inflight=limits.max_inflight_body_bytes)
    if token:
        app.add_middleware(BearerToken, token=token)
    app.add_middleware(AccessLog)  # added last: outermost, so it also logs the 401s and 413s
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

    @app.exception_handler(ServerClosing)
    async def closing(request: Request, exc: ServerClosing):  # type: ignore[no-untyped-def]
        return _error(503, "shutting_down", "The server is shutting down; retry on another instance.")

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception):  # type: ignore[no-untyped-def]
        logger.exception("prediction failed")
        return _error(500, "internal_error", f"The model could not process this request: {type(exc).__name__}.")

    @app.get("/", include_in_schema=False)
    async def root() -> Any:
        return RedirectResponse("/docs")

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
                "limits": {**asdict(limits), "max_items": max_items},
                "batching": {"max_batch": max_batch, "max_wait_ms": max_wait_ms},
                "version": __version__, "format_version": meta["format_version"]}

    def count(values: list[Any]) -> None:
        if len(values) > max_items:
            raise BadInput(413, "too_many_items", f"{len(values)} items; the limit is {max_items} per request.")

    async def parse_items(request: Request) -> list[Any]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            body = await off_loop(parse_json, await request.body(), limits.max_json_depth)
            if not isinstance(body, dict) or len(body) != 1 or next(iter(body)) not in ("texts", "images"):
                raise BadInput(422, "invalid_request", 'Send {"texts": [...]} or {"images": [<base64>, ...]}.')
            key, values = next(iter(body.items()))
            if not isinstance(values, list) or not values:
                raise BadInput(422, "invalid_request", f"`{key}` must be a non-empty list.")
            count(values)
            wanted = "texts" if predictor.modality == "text" else "images"
            if key != wanted:
                raise BadInput(422, "wrong_modality", f"This model takes {predictor.modality}s; send `{wanted}`, not `{key}`.")
            if key == "texts":
                return check_texts(values, limits)
            images = []
            for i in range(len(values)):  # one pool task per image: a large request does not hold a thread
                images.append(await off_loop(decode_base64_image, values[i], f"images[{i}]", limits, spec))
                values[i] = None  # its base64 text is no longer needed
            return images
        if ctype == "multipart/form-data":
            if predictor.modality != "image":
                raise BadInput(422, "wrong_modality", 'This model takes texts: send JSON {"texts": [...]}.')
            try:
                form = await request.form(max_files=max_items, max_fields=max_items)
            except HTTPException as exc:
                raise BadInput(413 if "many" in str(exc.detail).lower() else 400, "bad_multipart", str(exc.detail)) from None
            except Exception as exc:
                raise BadInput(400, "bad_multipart", f"The multipart body cannot be parsed: {exc}.") from None
            files = [v for k, v in form.multi_items() if k == "files" and hasattr(v, "read")]
            if not files:
                raise BadInput(422, "invalid_request", "Send the images as multipart files in the field `files`.")
            count(files)
            images = []
            for f in files:
                images.append(await off_loop(decode_image, await f.read(), f"file '{f.filename}'", limits, spec))
            return images
        raise BadInput(415, "unsupported_media_type",
                       f"Content type '{ctype or '(none)'}' is not supported; use application/json or multipart/form-data.")

    @app.post("/predict", openapi_extra=predict_openapi(limits, max_items))
    async def predict(request: Request) -> dict[str, Any]:
        items = await parse_items(request)
        request.state.items = len(items)
        proba = await batcher.submit(items)
        names, k = predictor.label_names, len(predictor.label_names)
        threshold = getattr(predictor, "ood_threshold", None)

        def one(row: np.ndarray) -> dict[str, Any]:
            p = row[:k]
            out = {"label": names[int(p.argmax())], "confidence": float(p.max()),
                   "probabilities": {n: float(v) for n, v in zip(names, p)}}
            if threshold is not None and len(row) > k:
                out.update({"unsure": bool(row[k] > threshold), "ood_score": float(row[k])})
            return out
        return {"engine": predictor.name, "predictions": [one(row) for row in proba]}

    schema_fn = app.openapi

    def openapi() -> dict[str, Any]:
        schema = schema_fn()
        schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = {
            "type": "object", "properties": {"error": {"type": "object", "properties": {
                "code": {"type": "string"}, "message": {"type": "string"}}}}}
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
