"""The real server (`headstart serve`) under every hostile input we know of, on 127.0.0.1.

Two saved models are served in turn (made once and kept in a temporary folder): an image model
(efficientnet-lite0 on builtin:digits) and a text model (minilm-l6 on builtin:bbc-news). Each case
replays one attack while three threads run beside it: an RSS sampler on the server process (its
VmHWM is reset before each case, so the peak counts even between samples), a /health prober every
50 ms, and an innocent client sending valid requests. Per case: what the attack got back, peak RSS,
/health p99 and max, innocent requests sent and failed.

    python bench/serve_hostile.py            # a few minutes on 2 cores; writes bench/results/serve_hostile.{md,json}
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import io
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

import headstart

WORK = Path(tempfile.gettempdir()) / "headstart-serve-bench"
MAX_CONNECTIONS = 1000  # the server's default


def models() -> tuple[Path, Path]:
    WORK.mkdir(exist_ok=True)
    image, text = WORK / "digits", WORK / "news"
    if not (image / "headstart.json").is_file():
        headstart.fit("builtin:digits:10", backbone="efficientnet-lite0", out=image, progress=False, baseline=False,
                      overwrite=True)
    if not (text / "headstart.json").is_file():
        headstart.fit("builtin:bbc-news:10", backbone="minilm-l6", max_length=64, out=text, progress=False,
                      baseline=False, overwrite=True)
    return image, text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, run: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "headstart", "serve", str(run), "--port", str(self.port)],
                                     stdout=self.log, stderr=self.log)
        for _ in range(600):
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            self.proc.kill()
            raise RuntimeError(f"server did not start: see {log}")
        self.ps = psutil.Process(self.proc.pid)

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS

    def peak_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> float:
        start = time.perf_counter()
        self.proc.terminate()
        code = self.proc.wait(timeout=30)
        self.log.close()
        return code, time.perf_counter() - start


class Watch:
    """RSS sampler, /health prober and an innocent client, running while a case runs."""

    def __init__(self, server: Server, innocent: dict) -> None:
        self.server, self.innocent = server, innocent
        self.stop = threading.Event()
        self.rss: list[float] = []
        self.health: list[float] = []
        self.health_failed = 0
        self.sent = self.failed = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=f) for f in (self._sample, self._probe, self._innocent)]

    def _sample(self) -> None:
        while not self.stop.is_set():
            try:
                self.rss.append(self.server.ps.memory_info().rss / 2**20)
            except psutil.Error:
                return
            time.sleep(0.02)

    def _probe(self) -> None:
        with httpx.Client(timeout=10) as c:
            while not self.stop.is_set():
                start = time.perf_counter()
                try:
                    ok = c.get(self.server.url + "/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.health.append(time.perf_counter() - start)
                self.health_failed += not ok
                time.sleep(0.05)

    def _innocent(self) -> None:
        with httpx.Client(timeout=60) as c:
            while not self.stop.is_set():
                self.sent += 1
                try:
                    r = c.post(self.server.url + "/predict", json=self.innocent)
                    if r.status_code != 200:
                        self.failures.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                self.failed = len(self.failures)
                time.sleep(0.1)

    def __enter__(self) -> Watch:
        self.server.reset_peak()
        for t in self.threads:
            t.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)
        self.stop.set()
        for t in self.threads:
            t.join(90)

    def row(self, case: str, outcome: str) -> dict:
        h = np.array(self.health) * 1000
        return {"case": case, "outcome": outcome, "load_avg_1min": round(os.getloadavg()[0], 1), "peak_rss_mb": round(max(self.server.peak_mb(), *self.rss), 0),
                "health_p99_ms": round(float(np.percentile(h, 99)), 1), "health_max_ms": round(float(h.max()), 1),
                "health_probes": len(h), "health_failed": self.health_failed,
                "innocent_sent": self.sent, "innocent_failed": self.failed, "innocent_failures": self.failures[:5]}


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def outcome(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return str(r.status_code)
    if "error" in body:
        return f"{r.status_code} {body['error']['code']}: {body['error']['message'][:90]}"
    return f"{r.status_code} ({len(body['predictions'])} predictions)"


def post(url: str, **kwargs: object) -> httpx.Response:
    return httpx.post(url + "/predict", timeout=300, **kwargs)


def sustained(url: str, seconds: float = 3.0, most: int = 200, **kwargs: object) -> tuple[httpx.Response, int]:
    """The same cheap attack again and again for `seconds` (at most `most` times): enough /health probes
    to make a p99 of. Returns the last answer and how many were sent (all answers must agree)."""
    end, answers = time.perf_counter() + seconds, set()
    for n in range(1, most + 1):
        r = post(url, **kwargs)
        answers.add(r.status_code)
        if time.perf_counter() > end:
            break
    assert len(answers) == 1, answers
    return r, n


def image_cases(server: Server) -> list[dict]:
    rows = []
    small = {"images": [b64(png(Image.new("RGB", (64, 64), "white")))]}
    # A 5000 x 5000 picture with some structure (a gradient), ~110 kB as PNG: exactly at the pixel limit.
    ramp = np.linspace(0, 255, 5000, dtype=np.uint8)
    big = png(Image.fromarray(np.stack([np.tile(ramp, (5000, 1))] * 3, axis=-1)))
    wide = png(Image.new("RGB", (1_000_000, 10), "gray"))
    huge = png(Image.new("1", (20_000, 20_000)))
    bomb = png(Image.new("1", (6_000, 6_000)))

    with Watch(server, small) as w:
        time.sleep(3)
    rows.append(w.row("idle (baseline)", "-"))
    with Watch(server, small) as w:
        r = post(server.url, json={"images": [small["images"][0]] * 16})
    rows.append(w.row("control: 16 PNGs of 64x64 in one request (the forward pass alone)", outcome(r)))
    with Watch(server, small) as w:
        r = post(server.url, json={"images": [b64(big)] * 16})
    rows.append(w.row(f"16 PNGs of 5000x5000 in one request ({len(big) * 16 / 1e6:.1f} MB)", outcome(r)))
    with Watch(server, small) as w, cf.ThreadPoolExecutor(3) as pool:
        rs = list(pool.map(lambda _: post(server.url, json={"images": [b64(big)] * 16}), range(3)))
    rows.append(w.row("3 such requests at once (48 images)", " / ".join(sorted({outcome(r) for r in rs}))))
    with Watch(server, small) as w:
        r, n = sustained(server.url, json={"images": [b64(big)] * 65})
    rows.append(w.row(f"65 PNGs of 5000x5000 (over the item limit), x{n}", outcome(r)))
    with Watch(server, small) as w:
        r, n = sustained(server.url, files=[("files", ("wide.png", wide, "image/png"))])
    rows.append(w.row(f"1,000,000x10 PNG ({len(wide) / 1e3:.0f} kB), x{n}", outcome(r)))
    with Watch(server, small) as w:
        r, n = sustained(server.url, json={"images": [b64(huge)]})
    rows.append(w.row(f"20000x20000 PNG ({len(huge) / 1e3:.0f} kB), x{n}", outcome(r)))
    with Watch(server, small) as w:
        r, n = sustained(server.url, json={"images": [b64(bomb)] * 64})
    rows.append(w.row(f"64 x 6000x6000 PNG bombs in one request ({len(bomb) * 64 / 1e3:.0f} kB), x{n}", outcome(r)))
    return rows


def text_cases(server: Server) -> list[dict]:
    rows = []
    innocent = {"texts": ["the central bank raised interest rates again"]}
    with Watch(server, innocent) as w:
        time.sleep(3)
    rows.append(w.row("idle (baseline)", "-"))

    # Lone surrogates sent together with innocent requests, so they share batches.
    poison = b'{"texts": ["\\ud800 x"]}'
    headers = {"content-type": "application/json"}
    with Watch(server, innocent) as w, httpx.Client(timeout=60) as c, cf.ThreadPoolExecutor(8) as pool:
        jobs = [pool.submit(c.post, server.url + "/predict", content=poison, headers=headers) if i % 2 else
                pool.submit(c.post, server.url + "/predict", json={"texts": [f"match report {i}: the striker scored"]})
                for i in range(80)]
        rs = [j.result() for j in jobs]
    bad = [r for i, r in enumerate(rs) if i % 2]
    good = [r for i, r in enumerate(rs) if not i % 2]
    row = w.row("40 lone-surrogate requests among 40 innocent ones", outcome(bad[0]))
    row["innocent_sent"] += len(good)
    row["innocent_failed"] += sum(r.status_code != 200 for r in good)
    row["outcome"] += f" (all 40: {sorted({r.status_code for r in bad})})"
    rows.append(row)

    with Watch(server, innocent) as w:
        r, n = sustained(server.url, content=b"[" * 200_000, headers=headers)
    rows.append(w.row(f"JSON nested 200 000 deep, x{n}", outcome(r)))
    with Watch(server, innocent) as w:
        r, n = sustained(server.url, content=b'{"texts": [' + b"9" * 5000 + b"]}", headers=headers)
    rows.append(w.row(f"a 5000-digit integer, x{n}", outcome(r)))

    # Idle connections: 1.5x the connection cap, half silent, half stuck in their headers.
    n = MAX_CONNECTIONS * 3 // 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 512)), hard))
    socks: list[socket.socket] = []
    with Watch(server, innocent) as w:
        try:
            for i in range(n):
                s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                if i % 2:
                    s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # headers never finished
                socks.append(s)
            time.sleep(2)
            alive = 0
            for s in socks:  # the server has closed the oldest idle ones to make room
                s.setblocking(False)
                try:
                    alive += s.recv(1) != b""
                except BlockingIOError:
                    alive += 1
                except OSError:
                    pass
            after = httpx.get(server.url + "/health", timeout=5).status_code
        finally:
            for s in socks:
                s.close()
    rows.append(w.row(f"{n} idle connections (cap {MAX_CONNECTIONS})",
                      f"{alive} still open after 2 s; new client's /health: {after}"))
    return rows


def main() -> None:
    image, text = models()
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    results = {}
    for name, run, cases in (("image (efficientnet-lite0, torch)", image, image_cases),
                             ("text (minilm-l6, torch)", text, text_cases)):
        server = Server(run, WORK / f"{run.name}.log")
        try:
            rows = cases(server)
        finally:
            code, seconds = server.stop()
        results[name] = {"cases": rows, "sigterm_exit_code": code, "sigterm_exit_s": round(seconds, 2)}
        print(name, json.dumps(results[name], indent=1), flush=True)

    lines = ["`python bench/serve_hostile.py` - the real server on 127.0.0.1, default limits, 2 CPU cores shared by "
             "server and clients. While each case runs: RSS sampled (peak = VmHWM, reset before the case), /health "
             "probed every 50 ms, an innocent client sends valid requests. Goal: peak RSS < 1.5 GB, /health < 0.5 s, "
             "0 innocent failures. Machine load: the 1-minute load average when the case ended (2 cores; other "
             "jobs share them, and /health latency seen by a client includes waiting for a core).", ""]
    for name, res in results.items():
        lines += [f"## {name}", "", "| case | the attack got | peak RSS MB | /health p99 ms | /health max ms | "
                  "innocent failed / sent | machine load |", "|---|---|---|---|---|---|---|"]
        for r in res["cases"]:
            lines.append(f"| {r['case']} | {r['outcome'].replace('|', '/')} | {r['peak_rss_mb']:.0f} | "
                         f"{r['health_p99_ms']:.0f} | {r['health_max_ms']:.0f} | "
                         f"{r['innocent_failed']} / {r['innocent_sent']} | {r['load_avg_1min']} |")
        lines += ["", f"SIGTERM: exit code {res['sigterm_exit_code']} after {res['sigterm_exit_s']} s.", ""]
    (out / "serve_hostile.json").write_text(json.dumps(results, indent=2))
    (out / "serve_hostile.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
