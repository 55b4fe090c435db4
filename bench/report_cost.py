"""What writing report.html adds to a fit, and what the report looks like in Chromium.

Fits a linear probe with ``out=`` (so fit writes report.html, with the explained mistakes) and
times the report step inside the same fit (a wrapper around ``write_fit_report``):

1. image: efficientnet-lite0 at IMAGE_SIZE px on builtin:mnist:500 (5000 digits, 1000 test items),
   once with a cold feature cache and once warm (features cached: the fit is then mostly the probe).
2. text: minilm-l6 on builtin:bbc-news:200 (1000 articles, 200 test items), cold.

Then opens each report.html in headless Chromium (the system package, via Playwright) and saves a
full-page screenshot. Writes bench/results/report/{cost.json,cost.md,report-image.png,report-text.png}.

    nice scripts/offline .venv/bin/python bench/report_cost.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import headstart
import headstart.api as api

OUT = Path(__file__).parent / "results" / "report"


def timed_fit(data: str, out: Path, **kwargs) -> dict:  # type: ignore[no-untyped-def]
    spent: list[float] = []
    original = api.write_fit_report

    def wrapper(*args, **kw):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return original(*args, **kw)
        finally:
            spent.append(time.perf_counter() - t)

    api.write_fit_report = wrapper
    try:
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        model = headstart.fit(data, out=out, progress=False, **kwargs)
        total = time.perf_counter() - t0
    finally:
        api.write_fit_report = original
    report_s = spent[0]
    return {"data": data, "options": {k: v for k, v in kwargs.items() if k != "cache_dir"},
            "test_items": model.info["metrics"]["test"]["n"], "fit_seconds_with_report": round(total, 2),
            "report_seconds": round(report_s, 2), "fit_seconds_without_report": round(total - report_s, 2),
            "added_percent": round(100 * report_s / (total - report_s), 1),
            "report_bytes": (out / "report.html").stat().st_size,
            "test_accuracy": model.info["metrics"]["test"]["accuracy"]}


def screenshot(page_file: Path, png: Path) -> dict:
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium") or shutil.which("chromium-browser") or os.environ.get("HEADSTART_CHROMIUM")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        errors, requests = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda r: requests.append(r.url))
        page.goto(page_file.absolute().as_uri())
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(png), full_page=True)
        browser.close()
    return {"console_errors": errors, "requests_besides_the_file": [r for r in requests[1:] if not r.startswith("data:")]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image-data", default="builtin:mnist:500")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--text-data", default="builtin:bbc-news:200")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--parts", default="image,text")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="report-cost-"))
    cache = work / "cache"
    rows = []
    if "image" in args.parts:
        cold = timed_fit(args.image_data, work / "image", image_size=args.image_size, cache_dir=cache)
        cold["cache"] = "cold"
        rows.append(cold)
        print(json.dumps(cold), file=sys.stderr, flush=True)
        warm = timed_fit(args.image_data, work / "image", image_size=args.image_size, cache_dir=cache)
        warm["cache"] = "warm"
        rows.append(warm)
        print(json.dumps(warm), file=sys.stderr, flush=True)
        warm["browser"] = screenshot(work / "image" / "report.html", OUT / "report-image.png")
        shutil.copyfile(work / "image" / "report.html", OUT / "report-image.html")
    if "text" in args.parts:
        text = timed_fit(args.text_data, work / "text", max_length=args.max_length, cache_dir=cache)
        text["cache"] = "cold"
        text["browser"] = screenshot(work / "text" / "report.html", OUT / "report-text.png")
        shutil.copyfile(work / "text" / "report.html", OUT / "report-text.html")
        rows.append(text)
        print(json.dumps(text), file=sys.stderr, flush=True)
    write_tables(rows)
    shutil.rmtree(work, ignore_errors=True)


def write_tables(rows: list[dict]) -> None:
    """Merge ``rows`` into cost.json (a part run again replaces its own row) and write cost.md."""
    path = OUT / "cost.json"
    old = json.loads(path.read_text()) if path.exists() else []
    key = lambda r: (r["data"], r["cache"])  # noqa: E731
    merged = {key(r): r for r in old}
    merged.update({key(r): r for r in rows})
    rows = list(merged.values())
    path.write_text(json.dumps(rows, indent=1))
    lines = ["| data | options | test items | feature cache | fit without report (s) | report (s) | added | "
             "report size |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['data']} | {r['options']} | {r['test_items']} | {r['cache']} | "
                     f"{r['fit_seconds_without_report']:.1f} | {r['report_seconds']:.1f} | {r['added_percent']:.1f}% | "
                     f"{r['report_bytes'] / 1e6:.2f} MB |")
    (OUT / "cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
