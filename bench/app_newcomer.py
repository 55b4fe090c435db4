"""A newcomer's time to a trained model in the browser, on built-in data.

With ``--install``, first times what a newcomer types to install: a fresh virtual environment,
``pip install torch==2.13.0`` (the CPU wheel, as the Makefile does) and ``pip install .`` from
this checkout, through the configured package index. Then, in a real headless Chromium
(Playwright driving the system ``chromium``), clicks what a newcomer clicks: start
``headstart app``, open the page, create a project, "Digits (images)" (a built-in example),
wait for the check, "Train a model" with the default settings, and wait for the model page.
Every step's seconds go to ``bench/results/app/newcomer.json`` and a table is printed.

    python bench/app_newcomer.py [--install]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def install(steps: dict[str, float]) -> str:
    venv = Path(tempfile.mkdtemp(prefix="headstart-newcomer-")) / "venv"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["torch==2.13.0"], check=True)
    steps["pip install torch==2.13.0 (CPU)"] = time.perf_counter() - t
    t = time.perf_counter()
    subprocess.run(pip + [str(ROOT)], check=True)
    steps["pip install . (headstart and its dependencies)"] = time.perf_counter() - t
    return str(venv / "bin" / "headstart")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--install", action="store_true", help="also time a fresh install")
    args = ap.parse_args()
    steps: dict[str, float] = {}
    exe = install(steps) if args.install else str(Path(sys.executable).parent / "headstart")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("no Chromium: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    data = Path(tempfile.mkdtemp(prefix="headstart-newcomer-data-"))
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([exe, "app", "--port", str(port), "--data-dir", str(data)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        steps["headstart app: server up"] = time.perf_counter() - t0
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            t = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}")
            page.fill("input[name=name]", "My first model")
            page.click("text=Create project")
            page.click("text=Digits (images)")
            page.wait_for_selector("[data-testid=check-summary]", timeout=600_000)
            steps["create a project, pick the example, see the check"] = time.perf_counter() - t
            t = time.perf_counter()
            page.click("text=Train")
            page.click("#start-fit")
            page.wait_for_selector("[data-testid=accuracy]", timeout=1_200_000)
            steps["train with the defaults (auto, 5-minute budget) until the model page"] = time.perf_counter() - t
            accuracy = page.inner_text("[data-testid=accuracy]")
            page.screenshot(path=str(OUT / "newcomer-model.png"), full_page=True)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    total = sum(steps.values())
    OUT.mkdir(parents=True, exist_ok=True)
    result = {"steps_s": {k: round(v, 1) for k, v in steps.items()}, "total_s": round(total, 1),
              "model_page": accuracy, "installed": args.install}
    (OUT / "newcomer.json").write_text(json.dumps(result, indent=2))
    lines = ["| step | seconds |", "|---|---|"] + [f"| {k} | {v:.1f} |" for k, v in steps.items()]
    lines.append(f"| **total** | **{total:.1f}** |")
    (OUT / "newcomer.md").write_text("\n".join(lines) + f"\n\nThe model page said: {accuracy}.\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
