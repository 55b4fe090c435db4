"""The jobs themselves, each a call into the library, run in a worker process.

``python -m headstart.app.tasks JOB_ID`` (the database URL and data folder come from the
environment, so a password in a URL never shows in a process list). The process dies with the
server that started it, so a job never runs on unseen after a crash; the server re-queues it when
it starts again.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from .db import DataVersion, Job, Run, Store
from .storage import data_path, item_preview

ENV_DB = "HEADSTART_APP_DB"
ENV_DATA = "HEADSTART_APP_DATA"
ENV_PARENT = "HEADSTART_APP_PARENT"
MAX_ITEMS_SHOWN = 24


def check_job(store: Store, job: Job, version: DataVersion, data_dir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """``validate`` on the version, in words, with each finding's items (text or a thumbnail link)."""
    from ..data import load_data, validate

    say("Reading the data")
    data = load_data(data_path(data_dir / version.path, version.kind))
    say(f"Checking {len(data)} {data.modality}s")
    report = validate(data).to_dict()
    index = {item_id: i for i, item_id in enumerate(data.ids)}
    for finding in report["findings"]:  # type: ignore[union-attr]
        shown: dict[str, Any] = {}
        for where in finding["where"][:MAX_ITEMS_SHOWN]:
            for item_id in named_items(where, index):
                shown.setdefault(item_id, item_preview(data, index[item_id]))
        finding["items"] = list(shown.values())[:MAX_ITEMS_SHOWN]
    report["modality"] = data.modality
    report["summary"] = summary_words(report)
    return report


def named_items(where: str, index: dict[str, int]) -> list[str]:
    """The item ids in one of a finding's ``where`` strings: ``id``, ``id (reason)``, duplicate groups
    ``a = b`` and label conflicts ``a=cat vs b=dog``."""
    found = []
    for part in re.split(r" = | vs ", where):
        for candidate in (part, part.split(" (")[0], part.rsplit("=", 1)[0]):
            if candidate in index:
                found.append(candidate)
                break
    return found


def summary_words(report: dict[str, Any]) -> str:
    errors = [f for f in report["findings"] if f["level"] == "error"]
    warnings = [f for f in report["findings"] if f["level"] == "warning"]
    counts = report["class_counts"]
    head = (f"{report['n_items']} {report['modality']}s in {len(counts)} classes "
            f"(smallest: {min(counts.values()) if counts else 0}, largest: {max(counts.values()) if counts else 0}).")
    if errors:
        return head + f" {len(errors)} problem(s) must be fixed before training; {len(warnings)} warning(s)."
    if warnings:
        return head + f" Ready to train; {len(warnings)} warning(s) worth a look."
    return head + " No problems found: ready to train."


def deep_job(store: Store, job: Job, version: DataVersion, data_dir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """``check --deep``: labels that look wrong, near-duplicates and outliers, each with its item."""
    from ..data import load_data
    from ..workflows.quality import deep_check

    data = load_data(data_path(data_dir / version.path, version.kind))
    say(f"Looking for wrong labels, near-duplicates and outliers among {len(data)} {data.modality}s")
    result = deep_check(data, progress=False, log=say)
    index = {item_id: i for i, item_id in enumerate(data.ids)}
    for row in result["candidates"]:
        if row["item"] in index:
            row["preview"] = item_preview(data, index[row["item"]])
    result["modality"] = data.modality
    counts = result["counts"]
    result["summary"] = (f"{counts.get('label-issue', 0)} label(s) look wrong, {counts.get('near-duplicate', 0)} "
                         f"near-duplicate(s), {counts.get('outlier', 0)} outlier(s) among {len(data)} items.")
    say(result["summary"])
    return result


def ladder_job(store: Store, job: Job, version: DataVersion, data_dir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    from ..workflows.ladder import run_ladder

    params = job.params or {}
    budgets = [b if b == "all" else int(b) for b in params.get("budgets", [0, 8, 32, "all"])]
    return run_ladder(str(data_path(data_dir / version.path, version.kind)), budgets=budgets,
                      seeds=int(params.get("seeds", 1)), backbone=params.get("backbone") or None,
                      progress=False, log=say)


def fit_job(store: Store, job: Job, version: DataVersion, data_dir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    from ..api import fit

    params = job.params or {}
    strategy = params.get("strategy") or "auto"
    options = dict(params.get("options") or {})
    if strategy == "auto":
        options.setdefault("budget_s", float(params.get("budget_s") or 300))
    out = data_dir / "runs" / f"job-{job.id}"
    source = data_path(data_dir / version.path, version.kind)
    model = fit(str(source), backbone=params.get("backbone") or None, strategy=strategy, options=options, out=out,
                progress=False, log=say, overwrite=True, seed=int(params.get("seed", 0)),
                command=f"headstart fit {source} --strategy {strategy}"
                        + (f" --backbone {params['backbone']}" if params.get("backbone") else ""))
    info = model.info
    metrics = info.get("metrics", {})
    test = metrics.get("test", {})
    base = metrics.get("baseline", {}).get("test", {})
    gain = metrics.get("transfer_gain", {})
    summary = {"accuracy": test.get("accuracy"), "macro_f1": test.get("macro_f1"),
               "accuracy_ci95": (test.get("ci95") or {}).get("accuracy"), "n_test": test.get("n"),
               "baseline_accuracy": base.get("accuracy"), "gain": gain.get("accuracy"),
               "gain_ci95": (gain.get("ci95") or {}).get("accuracy"),
               "strategy": strategy, "chosen": info["strategy"]["chosen"].get("chosen_strategy", strategy),
               "reasons": info["strategy"].get("reasons", []), "backbone": model.backbone.card.name,
               "labels": model.label_names, "modality": model.modality, "version": version.number,
               "seconds": round(sum(info.get("timings_s", {}).values()), 1)}
    from ..workflows.report import REPORT

    if (out / REPORT).is_file():  # fit writes it beside the model
        summary["report"] = REPORT
    summary["run"] = {"path": str(out.relative_to(data_dir))}  # recorded with the job's end, in one transaction
    return summary


def export_job(store: Store, job: Job, version: DataVersion, data_dir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    from ..data import load_data
    from ..export.onnx import export_onnx

    with store.session() as s:
        run = s.get(Run, job.run_id)
        assert run is not None
        run_dir = data_dir / run.path
        run_version = s.get(DataVersion, run.version_id)
        assert run_version is not None
    data = load_data(data_path(data_dir / run_version.path, run_version.kind))
    step = max(1, len(data) // 16)
    items = [data.load(i) for i in range(0, len(data), step)][:16]
    return export_onnx(run_dir, items, log=say)


TASKS: dict[str, Callable[..., dict[str, Any]]] = {"check": check_job, "deep": deep_job, "ladder": ladder_job,
                                                    "fit": fit_job, "export": export_job}


def _die_with_parent(parent: int) -> None:
    """Exit when the server ``parent`` that started this process is gone (killed with -9 included).
    Its pid comes from the server: asked here, a server that died during this process's start
    would already have been replaced by init."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG = SIGKILL
    except (OSError, AttributeError):
        pass

    def watch() -> None:  # where prctl is missing (macOS): poll
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(1)

    if os.getppid() != parent:  # died before the signal was armed
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def run_job(store: Store, job_id: int, data_dir: Path, claim: str | None = None) -> None:
    from ..errors import HeadstartError

    with store.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        version = s.get(DataVersion, job.version_id) if job.version_id else None
        s.expunge_all()
    say = lambda line: store.append_log(job_id, line, claim)  # noqa: E731
    try:
        if version is None:
            raise HeadstartError("The job names no data version.")
        result = _jsonable(TASKS[job.kind](store, job, version, data_dir, say))
        made = result.pop("run", None)
        run = None
        if made is not None:
            summary = dict(result)
            run = Run(project_id=job.project_id, version_id=version.id, job_id=job.id, path=made["path"], summary=summary)
        store.finish(job_id, "done", result=result, claim=claim, run=run)
    except HeadstartError as err:
        say(f"Failed: {err}")
        store.finish(job_id, "failed", error=str(err), claim=claim)
    except Exception as exc:  # a bug: keep the traceback in the job's log
        say(traceback.format_exc())
        store.finish(job_id, "failed", error=f"Unexpected {type(exc).__name__}: {exc}. This is a bug in headstart; "
                                             "the job's log holds the traceback.", claim=claim)


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    _die_with_parent(int(os.environ[ENV_PARENT]))
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    store = Store(os.environ[ENV_DB])
    run_job(store, int(args[0]), Path(os.environ[ENV_DATA]), args[1] if len(args) > 1 else None)


if __name__ == "__main__":
    main()
