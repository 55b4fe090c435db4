"""The web app: a JSON API and the hand-written pages (package data under ``static/``) that call it.

Access: on a loopback address nobody but this machine reaches the server, and requests must name
a loopback host (a page elsewhere cannot rebind its name to 127.0.0.1). Anywhere else a token is
needed: the login page turns it into an HttpOnly session cookie (API clients may send
``Authorization: Bearer TOKEN`` instead). Every request that changes something needs the
``X-CSRF-Token`` header to equal the ``hs_csrf`` cookie (double submit; both cookies SameSite=Strict),
so another site cannot post to the app from a visitor's browser.
"""


import asyncio
import functools
import hmac
import json
import logging
import secrets
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from ..errors import HeadstartError
from .db import ACTIVE, JOB_KINDS, DataVersion, Job, Project, Run, Store, clean_text
from .jobs import Dispatcher
from .storage import Refused, UploadLimits, build_version, data_path, item_preview, materialise_builtin, relabel
from .storage import safe_name, table_columns, upload_kind

logger = logging.getLogger("headstart.app")
STATIC = Path(__file__).parent / "static"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
MAX_JSON_BYTES = 1024 * 1024
MAX_TRY_BYTES = 16 * 1024 * 1024
STAGING_TTL_S = 24 * 3600
EXAMPLES = {"mnist": "MNIST handwritten digits (images)", "bbc-news": "BBC News articles in 5 topics (texts)"}
FIT_STRATEGIES = ("auto", "linear-probe", "prototypes", "lp-ft", "full", "lora", "setfit", "zero-shot")


@dataclass
class AppConfig:
    data_dir: Path
    db_url: str | None = None
    token: str | None = None  # None: no login (loopback only)
    loopback: bool = True
    workers: int = 1
    limits: UploadLimits = field(default_factory=UploadLimits)


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def _err(status: int, message: str, code: str = "bad_request") -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _session_value(token: str) -> str:
    return hmac.new(token.encode(), b"headstart-app-session", sha256).hexdigest()


class Models:
    """Loaded models for the try-it page, the most recently used few kept in memory."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self.cache: OrderedDict[int, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, run_id: int, path: Path) -> Any:
        with self.lock:
            if run_id in self.cache:
                self.cache.move_to_end(run_id)
                return self.cache[run_id]
            from ..api import load

            model = load(path)
            self.cache[run_id] = model
            while len(self.cache) > self.keep:
                self.cache.popitem(last=False)
            return model


def create_app(config: AppConfig) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
    from fastapi.staticfiles import StaticFiles

    data_dir = config.data_dir.absolute()
    for sub in ("projects", "runs", "staging", "logs"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    from .db import database_url

    store = Store(database_url(config.db_url, data_dir))
    for stale in (data_dir / "staging").iterdir():  # uploads never turned into a version
        if time.time() - stale.stat().st_mtime > STAGING_TTL_S:
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    dispatcher = Dispatcher(store, data_dir, workers=config.workers)
    models = Models()
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="headstart-app")
    try_slots = threading.Semaphore(2)
    limits = config.limits

    async def off_loop(fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    @asynccontextmanager
    async def lifespan(app: Any):  # type: ignore[no-untyped-def]
        dispatcher.start()
        pool.submit(backbone_choices)  # warm: the first page should not wait for torch to import
        try:
            yield
        finally:
            dispatcher.stop()
            pool.shutdown(wait=False)

    app = FastAPI(title="headstart app", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store, app.state.dispatcher = store, dispatcher
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    session = _session_value(config.token) if config.token else None

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        path = request.url.path
        if config.loopback and not config.token:
            given = request.headers.get("host", "")
            host = given.split("]")[0] + "]" if given.startswith("[") else given.rsplit(":", 1)[0]
            if host not in LOOPBACK_HOSTS:
                return _err(403, f"Host '{host}' is not this machine's loopback name; open http://127.0.0.1 instead.",
                            "bad_host")
        length = request.headers.get("content-length")
        if length is not None and not length.isdigit():
            return _err(400, "Content-Length is not a number.")
        if session is not None and path not in ("/login", "/api/login", "/health") and not path.startswith("/static/"):
            bearer = request.headers.get("authorization", "")
            ok = hmac.compare_digest(request.cookies.get("hs_session", ""), session) or (
                bool(config.token) and hmac.compare_digest(bearer, f"Bearer {config.token}"))
            if not ok:
                if path.startswith("/api/"):
                    return _err(401, "Log in first: open /login and give the access token.", "unauthorized")
                return RedirectResponse("/login", status_code=303)
        if request.method in UNSAFE and not request.headers.get("authorization"):
            cookie = request.cookies.get("hs_csrf", "")
            sent = request.headers.get("x-csrf-token", "")
            if not cookie or not hmac.compare_digest(cookie, sent):
                return _err(403, "The form's security check failed (CSRF token missing or wrong). Reload the page "
                                 "and try again.", "csrf")
        response = await call_next(request)
        if not request.cookies.get("hs_csrf"):
            response.set_cookie("hs_csrf", secrets.token_urlsafe(24), samesite="strict", path="/")
        response.headers.setdefault("x-content-type-options", "nosniff")
        response.headers.setdefault("x-frame-options", "DENY")
        response.headers.setdefault("content-security-policy",
                                    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                                    "script-src 'self'; frame-ancestors 'none'")
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Any:
        return _err(exc.status, exc.message, exc.code)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Any:
        return _err(exc.status, exc.message, "refused")

    @app.exception_handler(HeadstartError)
    async def headstart_error(request: Request, exc: HeadstartError) -> Any:
        return _err(422, str(exc), "refused")

    async def json_body(request: Request) -> dict[str, Any]:
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_JSON_BYTES:
                raise ApiError(413, f"The request is larger than {MAX_JSON_BYTES} bytes.", "too_large")
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, RecursionError):
            raise ApiError(400, "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        return body

    def get_or_404(s: Any, model: Any, key: int, what: str, lock: bool = False) -> Any:
        row = s.get(model, key, with_for_update=lock)
        if row is None:
            raise ApiError(404, f"There is no {what} #{key}.", "not_found")
        return row

    # -- pages ------------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def index() -> Any:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/login", include_in_schema=False)
    async def login_page() -> Any:
        return HTMLResponse((STATIC / "login.html").read_text(encoding="utf-8"))

    @app.post("/api/login")
    async def login(request: Request) -> Any:
        body = await json_body(request)
        given = str(body.get("token", ""))
        if not config.token:
            return {"ok": True}
        if not hmac.compare_digest(given, config.token):
            raise ApiError(401, "That access token is wrong. It was printed when the server first started "
                                "(or set in HEADSTART_APP_TOKEN).", "unauthorized")
        response = JSONResponse({"ok": True})
        response.set_cookie("hs_session", session or "", httponly=True, samesite="strict", path="/")
        return response

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    # -- projects ---------------------------------------------------------------------------------

    def project_row(s: Any, p: Project) -> dict[str, Any]:
        versions = s.scalar(select(func.count()).select_from(DataVersion).where(DataVersion.project_id == p.id))
        runs = s.scalar(select(func.count()).select_from(Run).where(Run.project_id == p.id))
        return {"id": p.id, "name": p.name, "modality": p.modality, "created": p.created.isoformat(),
                "versions": versions, "runs": runs}

    @app.get("/api/projects")
    async def projects() -> Any:
        backbones = await off_loop(backbone_choices)  # the first call imports the backbones (torch): not on the loop
        with store.session() as s:
            return {"projects": [project_row(s, p) for p in s.scalars(select(Project).order_by(Project.id.desc()))],
                    "examples": EXAMPLES, "strategies": list(FIT_STRATEGIES), "backbones": backbones}

    @app.post("/api/projects")
    async def create_project(request: Request) -> Any:
        body = await json_body(request)
        name = clean_text(str(body.get("name", ""))).strip()
        if not name or len(name) > 200:
            raise ApiError(422, "Give the project a name (1 to 200 characters).")
        with store.session() as s:
            p = Project(name=name)
            s.add(p)
            s.flush()
            return project_row(s, p)

    def version_row(v: DataVersion) -> dict[str, Any]:
        return {"id": v.id, "number": v.number, "kind": v.kind, "note": v.note, "n_items": v.n_items,
                "class_counts": v.class_counts, "parent_id": v.parent_id, "created": v.created.isoformat()}

    def job_row(j: Job, full: bool = False) -> dict[str, Any]:
        row = {"id": j.id, "kind": j.kind, "status": j.status, "version_id": j.version_id, "run_id": j.run_id,
               "params": j.params, "error": j.error, "attempts": j.attempts, "created": j.created.isoformat(),
               "started": j.started.isoformat() if j.started else None,
               "finished": j.finished.isoformat() if j.finished else None,
               "last_line": (j.log.strip().splitlines() or [""])[-1][:300]}
        if full:
            row.update({"log": j.log, "result": j.result, "project_id": j.project_id})
        return row

    def run_row(r: Run) -> dict[str, Any]:
        return {"id": r.id, "job_id": r.job_id, "version_id": r.version_id, "summary": r.summary,
                "created": r.created.isoformat(), "onnx": (data_dir / r.path / "onnx" / "export.json").is_file()}

    @app.get("/api/projects/{pid}")
    async def project(pid: int) -> Any:
        with store.session() as s:
            p = get_or_404(s, Project, pid, "project")
            versions = list(s.scalars(select(DataVersion).where(DataVersion.project_id == pid)
                                      .order_by(DataVersion.number.desc())))
            jobs = list(s.scalars(select(Job).where(Job.project_id == pid).order_by(Job.id.desc()).limit(100)))
            runs = list(s.scalars(select(Run).where(Run.project_id == pid).order_by(Run.id.desc())))
            latest: dict[str, Any] = {}
            for j in jobs:  # the newest finished check and ladder of each version
                if j.kind in ("check", "deep", "ladder") and j.status == "done":
                    latest.setdefault(f"{j.kind}:{j.version_id}", {"job_id": j.id, "result": j.result})
            return {**project_row(s, p), "data_versions": [version_row(v) for v in versions],
                    "jobs": [job_row(j) for j in jobs], "run_list": [run_row(r) for r in runs], "latest": latest}

    # -- uploads and versions ---------------------------------------------------------------------

    def staged_info(folder: Path, encoding: str | None = None) -> dict[str, Any]:
        file = next(iter(folder.iterdir()))
        kind = upload_kind(file.name)
        info: dict[str, Any] = {"upload_id": folder.name, "filename": file.name, "kind": kind,
                                "bytes": file.stat().st_size}
        if kind == "table":
            from ..data.readers import LABEL_COLUMNS, TEXT_COLUMNS

            columns = table_columns(file, encoding)
            info["columns"] = columns
            info["guess"] = {"text": next((c for c in columns if c.lower() in TEXT_COLUMNS), None),
                             "label": next((c for c in columns if c.lower() in LABEL_COLUMNS), None)}
        return info

    @app.post("/api/projects/{pid}/uploads")
    async def upload(pid: int, request: Request, filename: str = "") -> Any:
        with store.session() as s:
            get_or_404(s, Project, pid, "project")
        if not filename:
            raise ApiError(422, "The upload names no file.")
        upload_kind(filename)  # the type, before any byte is stored
        length = request.headers.get("content-length")
        if length is not None and int(length) > limits.max_upload_bytes:
            raise Refused(f"'{filename}' is {int(length)} bytes; uploads are limited to {limits.max_upload_bytes} "
                          "bytes. Upload fewer or smaller files.", 413)
        folder = data_dir / "staging" / uuid.uuid4().hex
        folder.mkdir()
        target = folder / safe_name(filename)
        seen = 0
        try:
            with open(target, "wb") as fh:
                async for chunk in request.stream():
                    seen += len(chunk)
                    if seen > limits.max_upload_bytes:
                        raise Refused(f"'{filename}' is larger than the upload limit of {limits.max_upload_bytes} "
                                      "bytes; nothing was stored.", 413)
                    fh.write(chunk)
            if seen == 0:
                raise Refused(f"'{filename}' is empty (0 bytes); choose the file again.")
            return await off_loop(staged_info, folder, request.query_params.get("encoding") or None)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    @app.post("/api/projects/{pid}/examples")
    async def example(pid: int, request: Request) -> Any:
        body = await json_body(request)
        name, per_class = str(body.get("name", "")), body.get("per_class", 20)
        if name not in EXAMPLES or not isinstance(per_class, int) or not 2 <= per_class <= 500:
            raise ApiError(422, f"Choose one of {', '.join(EXAMPLES)} and 2 to 500 examples per class.")
        with store.session() as s:
            get_or_404(s, Project, pid, "project")
        folder = data_dir / "staging" / uuid.uuid4().hex
        folder.mkdir()
        await off_loop(materialise_builtin, f"{name}:{per_class}", folder)
        return await off_loop(staged_info, folder, None)

    def make_version(pid: int, body: dict[str, Any]) -> dict[str, Any]:
        upload_id = str(body.get("upload_id", ""))
        if not upload_id.isalnum():
            raise ApiError(422, "Unknown upload; upload the file again.")
        staged = data_dir / "staging" / upload_id
        if not staged.is_dir():
            raise ApiError(404, "That upload is gone (already used or expired); upload the file again.", "not_found")
        file = next(iter(staged.iterdir()))
        with store.session() as s:
            p = get_or_404(s, Project, pid, "project")
            number = (s.scalar(select(func.max(DataVersion.number)).where(DataVersion.project_id == pid)) or 0) + 1
        rel = Path("projects") / str(pid) / f"v{number}"
        dest = data_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            kind, data = build_version(file, dest, text_column=body.get("text_column") or None,
                                       label_column=body.get("label_column") or None,
                                       encoding=body.get("encoding") or None, limits=limits)
        finally:  # used or refused, the staged file is not kept
            shutil.rmtree(staged, ignore_errors=True)
        with store.session() as s:
            p = get_or_404(s, Project, pid, "project")
            if p.modality and p.modality != data.modality:
                shutil.rmtree(dest, ignore_errors=True)
                raise Refused(f"This project holds {p.modality}s; '{file.name}' holds {data.modality}s. "
                              "Make a new project for it.")
            p.modality = data.modality
            v = DataVersion(project_id=pid, number=number, kind=kind, path=str(rel), n_items=len(data),
                            note=f"uploaded {file.name}", class_counts=dict(sorted(data.class_counts().items())))
            s.add(v)
            s.flush()
            job = Job(project_id=pid, version_id=v.id, kind="check", params={})
            s.add(job)
            s.flush()
            return {"version": version_row(v), "check_job": job.id}

    @app.post("/api/projects/{pid}/versions")
    async def create_version(pid: int, request: Request) -> Any:
        body = await json_body(request)
        out = await off_loop(make_version, pid, body)
        dispatcher.submitted()
        return out

    def version_and_data(vid: int) -> tuple[DataVersion, Any]:
        from ..data import load_data

        with store.session() as s:
            v = get_or_404(s, DataVersion, vid, "data version")
        return v, load_data(data_path(data_dir / v.path, v.kind))

    @app.get("/api/versions/{vid}/items")
    async def items(vid: int, offset: int = 0, limit: int = 60, label: str = "", ids: str = "") -> Any:
        try:
            wanted = {str(i) for i in json.loads(ids)} if ids else None
        except (ValueError, TypeError):
            raise ApiError(400, "`ids` must be a JSON list of item ids.") from None
        v, data = await off_loop(version_and_data, vid)
        picked = [i for i in range(len(data)) if (not label or data.labels[i] == label)
                  and (wanted is None or data.ids[i] in wanted)]
        limit = max(1, min(limit, 500))
        return {"version": version_row(v), "modality": data.modality, "total": len(picked),
                "labels": data.label_names,
                "items": [item_preview(data, i) for i in picked[offset:offset + limit]]}

    @app.get("/api/versions/{vid}/file")
    async def item_file(vid: int, id: str) -> Any:
        with store.session() as s:
            v = get_or_404(s, DataVersion, vid, "data version")
        if v.kind != "images":
            raise ApiError(404, "Only image versions have files to show.", "not_found")
        root = (data_dir / v.path / "data").resolve()
        path = (root / id).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise ApiError(404, f"No item '{id}' in version {v.number}.", "not_found")
        return FileResponse(path, headers={"cache-control": "private, max-age=3600"})

    def make_relabel(vid: int, changes: dict[str, str]) -> dict[str, Any]:
        with store.session() as s:
            parent = get_or_404(s, DataVersion, vid, "data version")
            number = (s.scalar(select(func.max(DataVersion.number))
                               .where(DataVersion.project_id == parent.project_id)) or 0) + 1
        rel = Path("projects") / str(parent.project_id) / f"v{number}"
        data = relabel(data_dir / parent.path, parent.kind, changes, data_dir / rel)
        with store.session() as s:
            v = DataVersion(project_id=parent.project_id, number=number, kind=parent.kind, path=str(rel),
                            parent_id=parent.id, n_items=len(data),
                            note=f"relabelled {len(changes)} item(s) of version {parent.number}",
                            class_counts=dict(sorted(data.class_counts().items())))
            s.add(v)
            s.flush()
            job = Job(project_id=parent.project_id, version_id=v.id, kind="check", params={})
            s.add(job)
            s.flush()
            return {"version": version_row(v), "check_job": job.id}

    @app.post("/api/versions/{vid}/relabel")
    async def relabel_version(vid: int, request: Request) -> Any:
        body = await json_body(request)
        changes = body.get("changes")
        if not isinstance(changes, dict) or not changes or not all(isinstance(k, str) and isinstance(v, str)
                                                                    for k, v in changes.items()):
            raise ApiError(422, "Change at least one label (send {\"changes\": {item id: new label}}).")
        out = await off_loop(make_relabel, vid, changes)
        dispatcher.submitted()
        return out

    # -- jobs -------------------------------------------------------------------------------------

    @app.post("/api/projects/{pid}/jobs")
    async def submit(pid: int, request: Request) -> Any:
        body = await json_body(request)
        kind = str(body.get("kind", ""))
        if kind not in JOB_KINDS:
            raise ApiError(422, f"Unknown job '{kind}'; one of {', '.join(JOB_KINDS)}.")
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise ApiError(422, "`params` must be an object.")
        if kind == "fit":
            await off_loop(backbone_choices)  # imported (once) off the loop; validate_fit reads it
        for key in ("run_id", "version_id"):
            if body.get(key) is not None and not isinstance(body[key], int):
                raise ApiError(422, f"`{key}` must be a number.")
        with store.session() as s:
            # The project's row is locked (PostgreSQL: FOR UPDATE) until the job is added, so two requests
            # at once cannot both find it free of fits.
            get_or_404(s, Project, pid, "project", lock=kind == "fit")
            run_id = None
            if kind == "export":
                run = get_or_404(s, Run, int(body.get("run_id") or 0), "run")
                if run.project_id != pid:
                    raise ApiError(422, "That run belongs to another project.")
                run_id, version_id = run.id, run.version_id
            else:
                version_id = int(body.get("version_id") or 0) or s.scalar(
                    select(DataVersion.id).where(DataVersion.project_id == pid).order_by(DataVersion.number.desc()))
                if version_id is None:
                    raise ApiError(422, "Upload data first: the project has none.")
                v = get_or_404(s, DataVersion, version_id, "data version")
                if v.project_id != pid:
                    raise ApiError(422, "That data version belongs to another project.")
            if kind == "fit":
                validate_fit(params)
                busy = s.scalar(select(Job).where(Job.project_id == pid, Job.kind == "fit", Job.status.in_(ACTIVE)))
                if busy is not None:
                    raise ApiError(409, f"A fit is already {busy.status} on this project (job #{busy.id}); one fit "
                                        "per project runs at a time. Wait for it to finish or cancel it.", "busy")
            job = Job(project_id=pid, version_id=version_id, run_id=run_id, kind=kind, params=params)
            s.add(job)
            s.flush()
            row = job_row(job)
        dispatcher.submitted()
        return row

    def validate_fit(params: dict[str, Any]) -> None:
        strategy = params.get("strategy") or "auto"
        if strategy not in FIT_STRATEGIES:
            raise ApiError(422, f"Unknown strategy '{strategy}'; one of {', '.join(FIT_STRATEGIES)}.")
        budget = params.get("budget_s", 300)
        if not isinstance(budget, (int, float)) or not 5 <= budget <= 86400:
            raise ApiError(422, "The time budget must be between 5 seconds and 24 hours.")
        backbone = params.get("backbone")
        names = ["auto"] + [b["name"] for b in backbone_choices()]
        if backbone and backbone not in names:
            raise ApiError(422, f"Unknown backbone '{backbone}'; one of {', '.join(names)}.")

    @app.get("/api/jobs/{jid}")
    async def job(jid: int) -> Any:
        with store.session() as s:
            return job_row(get_or_404(s, Job, jid, "job"), full=True)

    @app.post("/api/jobs/{jid}/cancel")
    async def cancel(jid: int) -> Any:
        with store.session() as s:
            get_or_404(s, Job, jid, "job")
        state = await off_loop(dispatcher.cancel, jid)
        return {"id": jid, "status": state}

    # -- runs -------------------------------------------------------------------------------------

    def run_and_dir(rid: int) -> tuple[Run, Path]:
        with store.session() as s:
            r = get_or_404(s, Run, rid, "run")
        return r, data_dir / r.path

    @app.get("/api/runs/{rid}")
    async def run(rid: int) -> Any:
        r, folder = run_and_dir(rid)
        meta = json.loads((folder / "headstart.json").read_text(encoding="utf-8"))
        card = folder / "transfer_card.md"
        report = r.summary.get("report")
        return {**run_row(r), "project_id": r.project_id, "metrics": meta.get("info", meta).get("metrics"),
                "card": card.read_text(encoding="utf-8") if card.is_file() else "",
                "report_url": f"/api/runs/{rid}/report" if report else None}

    @app.get("/api/runs/{rid}/report")
    async def run_report(rid: int) -> Any:
        r, folder = run_and_dir(rid)
        report = r.summary.get("report")
        path = (folder / report).resolve() if report else None
        if path is None or not path.is_relative_to(folder.resolve()) or not path.is_file():
            raise ApiError(404, "This run has no HTML report.", "not_found")
        # The report is one self-contained page with its own styles and script: it runs sandboxed
        # (an origin of its own, no cookies), with nothing fetched from anywhere.
        return FileResponse(path, media_type="text/html", headers={"content-security-policy": (
            "sandbox allow-scripts; default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
            "script-src 'unsafe-inline'; frame-ancestors 'none'")})

    def model_inputs(model: Any, item: Any, is_text: bool, spec: bool = True) -> list[Any]:
        from ..serve.app import BadInput, Limits, check_texts, decode_image

        try:
            if is_text:
                if model.modality != "text":
                    raise ApiError(422, "This model reads images: drop an image instead of typing.")
                return check_texts([item], Limits())
            if model.modality != "image":
                raise ApiError(422, "This model reads texts: type a text instead of dropping a file.")
            return [decode_image(item, "The image", Limits(), model.backbone.card.input if spec else None)]
        except BadInput as exc:
            raise ApiError(exc.status, exc.message, exc.code) from None

    def predict(rid: int, item: Any, is_text: bool) -> dict[str, Any]:
        r, folder = run_and_dir(rid)
        model = models.get(rid, folder)
        inputs = model_inputs(model, item, is_text)
        with try_slots:
            proba, scores, unsure = model.predict_scored(inputs)
        ranked = sorted(zip(model.label_names, proba[0].tolist()), key=lambda t: -t[1])
        return {"label": ranked[0][0], "confidence": ranked[0][1],
                "probabilities": [{"label": k, "p": v} for k, v in ranked],
                "unsure": bool(unsure[0]) if unsure is not None else None,
                "ood_score": float(scores[0]) if scores is not None else None}

    async def try_input(request: Request) -> tuple[Any, bool]:
        """A typed text (JSON ``{"text": ...}``) or a dropped file's bytes: (item, is_text)."""
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_TRY_BYTES:
                raise ApiError(413, f"The file is larger than {MAX_TRY_BYTES} bytes.", "too_large")
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                return json.loads(raw)["text"], True
            except (ValueError, KeyError, TypeError):
                raise ApiError(400, "Send {\"text\": \"...\"} or an image file.") from None
        if not raw:
            raise ApiError(422, "The file is empty.")
        return raw, False

    @app.post("/api/runs/{rid}/predict")
    async def try_it(rid: int, request: Request) -> Any:
        return await off_loop(predict, rid, *await try_input(request))

    def explain(rid: int, item: Any, is_text: bool) -> dict[str, Any]:
        import base64

        from ..workflows.report import REPORT_SETTINGS

        from ..api import load

        r, folder = run_and_dir(rid)
        model = load(folder)  # its own copy: attribution hooks must not touch the model serving predictions
        inputs = model_inputs(model, item, is_text, spec=False)  # the explainer crops as the backbone does
        with try_slots:
            e = model.explain(inputs, settings=REPORT_SETTINGS)[0]
        out: dict[str, Any] = {"label": e.label, "probability": e.probability, "method": e.method}
        if e.modality == "image":
            out["overlay"] = "data:image/png;base64," + base64.b64encode(e.overlay_png(size=224)).decode()
        else:
            out["words"] = [{"word": w, "score": float(v)} for w, v in zip(e.words(), e.scores.tolist())]
        return out

    @app.post("/api/runs/{rid}/explain")
    async def explain_it(rid: int, request: Request) -> Any:
        return await off_loop(explain, rid, *await try_input(request))

    def zip_folder(folder: Path, skip: tuple[str, ...] = ()) -> Path:
        tmp = Path(tempfile.mkstemp(dir=data_dir / "staging", suffix=".zip")[1])
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(folder.rglob("*")):
                rel = f.relative_to(folder)
                if f.is_file() and not f.is_symlink() and not (rel.parts and rel.parts[0] in skip):
                    zf.write(f, f"{folder.name}/{rel}")
        return tmp

    def send_zip(tmp: Path, name: str) -> Any:
        def chunks() -> Any:
            try:
                with open(tmp, "rb") as fh:
                    while block := fh.read(1 << 20):
                        yield block
            finally:
                tmp.unlink(missing_ok=True)

        return StreamingResponse(chunks(), media_type="application/zip",
                                 headers={"content-disposition": f'attachment; filename="{name}"'})

    @app.get("/api/runs/{rid}/download")
    async def download(rid: int) -> Any:
        r, folder = run_and_dir(rid)
        return send_zip(await off_loop(zip_folder, folder, ("onnx",)), f"model-run-{rid}.zip")

    @app.get("/api/runs/{rid}/onnx")
    async def download_onnx(rid: int) -> Any:
        r, folder = run_and_dir(rid)
        if not (folder / "onnx" / "export.json").is_file():
            raise ApiError(404, "This run has no ONNX export yet: press 'Export to ONNX' first.", "not_found")
        return send_zip(await off_loop(zip_folder, folder / "onnx"), f"model-run-{rid}-onnx.zip")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Any:
        return Response(status_code=204)

    return app


@functools.lru_cache(maxsize=1)
def backbone_choices() -> list[dict[str, str]]:
    """The zoo, for the "advanced" part of the fit form; ``auto`` ranks them on the data first."""
    from ..backbones import list_backbones

    return [{"name": e.name, "modality": e.modality, "description": e.description} for e in list_backbones()]
