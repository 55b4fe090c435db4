"""Load test of the real server on 127.0.0.1, with and without batching.

A text model (minilm-l6, exported to ONNX) is served by `headstart serve` in a subprocess.
CLIENTS threads send REQUESTS single-text requests in total (bounded in count and time). Reported:
errors, p50 / p99 latency and throughput, for --max-batch 32 and --max-batch 1 (no batching), and
the ceiling: the same texts through bare ONNX Runtime in-process, in batches of 32.

    python bench/load_test.py [CLIENTS] [REQUESTS]     # default 16 clients, 320 requests
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

import headstart
from headstart.data import load_data
from headstart.export.onnx import OnnxPredictor, export_onnx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(run: Path, max_batch: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "headstart", "serve", str(run), "--port", str(port),
                             "--max-batch", str(max_batch), "--max-wait-ms", "5"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def load(url: str, texts: list[str], clients: int) -> dict:
    latencies: list[float] = []
    errors = 0

    def worker(chunk: list[str]) -> tuple[list[float], int]:
        lat, err = [], 0
        with httpx.Client(timeout=60) as client:
            for t in chunk:
                start = time.perf_counter()
                r = client.post(url + "/predict", json={"texts": [t]})
                lat.append(time.perf_counter() - start)
                err += r.status_code != 200
        return lat, err

    chunks = [texts[i::clients] for i in range(clients)]
    start = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as pool:
        for lat, err in pool.map(worker, chunks):
            latencies += lat
            errors += err
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"requests": len(texts), "errors": errors, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "throughput_rps": len(texts) / wall}


def main() -> None:
    clients = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 320
    data = load_data("builtin:bbc-news")
    # Short texts (first 300 characters) as in a ticket or a search query.
    texts = [t[:300] for t in data.items[:n]]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "news"
        headstart.fit("builtin:bbc-news:40", backbone="minilm-l6", max_length=128, out=run, progress=False,
                      baseline=False)
        export_onnx(run, texts[:32])
        for label, max_batch in (("batched (max 32, wait 5 ms)", 32), ("unbatched (max 1)", 1)):
            proc, url = serve(run, max_batch)
            try:
                load(url, texts[:clients * 2], clients)  # warm-up
                results[label] = load(url, texts, clients)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        runner = OnnxPredictor.from_run(run)
        runner.predict_proba(texts[:32])
        start = time.perf_counter()
        for i in range(0, n, 32):
            runner.predict_proba(texts[i:i + 32])
        bare = n / (time.perf_counter() - start)
    lines = [f"{clients} concurrent clients, {n} single-text requests each run, minilm-l6 ONNX fp32, 2 CPU cores "
             "shared by server and clients", "",
             "| server | errors | p50 ms | p99 ms | requests/s | served / bare ORT |", "|---|---|---|---|---|---|"]
    for label, r in results.items():
        lines.append(f"| {label} | {r['errors']} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['throughput_rps']:.1f} | "
                     f"{r['throughput_rps'] / bare:.2f} |")
    lines.append(f"| bare ONNX Runtime in-process, batches of 32 (ceiling) | - | - | - | {bare:.1f} | 1.00 |")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "load_test.json").write_text(json.dumps({"clients": clients, "requests": n, "servers": results,
                                                    "bare_items_per_s": bare}, indent=2))
    (out / "load_test.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
