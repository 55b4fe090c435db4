"""Experiment history: log a fitted run to MLflow, and list saved model folders side by side.

MLflow is optional (``pip install 'headstart[track]'``). Where the runs go: the ``uri`` given,
else ``$MLFLOW_TRACKING_URI``, else a local store in ``./mlruns``: an SQLite database
(``mlruns/mlflow.db``) with the artifacts beside it (``mlruns/artifacts``), because MLflow 3 no
longer writes its plain-file store. ``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db``
browses it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..artifact import read_meta
from ..errors import ConfigError, HeadstartError, MissingDependencyError

LOCAL_STORE = "mlruns"


def tracking_uri(uri: str | None = None) -> str:
    """The tracking URI a run is logged to (see the module docstring)."""
    if uri:
        return uri
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return env or f"sqlite:///{(Path(LOCAL_STORE) / 'mlflow.db').absolute()}"


def _is_local_default(uri: str) -> bool:
    return uri == f"sqlite:///{(Path(LOCAL_STORE) / 'mlflow.db').absolute()}"


def _flat(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif value is not None and not isinstance(value, list):
        out[prefix] = str(value)[:500]  # MLflow caps a parameter's value


def run_params(meta: dict[str, Any]) -> dict[str, str]:
    """What was decided before training: data, backbone, strategy and its configuration, seed."""
    data, strategy = meta.get("data", {}), meta.get("strategy", {})
    params = {"data.source": str(data.get("source")), "data.modality": str(data.get("modality")),
              "data.n": str(data.get("n")), "backbone": str(meta.get("backbone", {}).get("name")),
              "strategy": str(strategy.get("type")), "seed": str(meta.get("seed")),
              "classes": str(len(meta.get("labels", [])))}
    for split_name, n in data.get("splits", {}).items():
        params[f"data.{split_name}"] = str(n)
    _flat("config", strategy.get("config", {}), params)
    _flat("chosen", strategy.get("chosen", {}), params)
    return params


def run_metrics(meta: dict[str, Any]) -> dict[str, float]:
    """The final numbers: test scores, the baseline's, the gain and the time each stage took."""
    metrics = meta.get("metrics", {})
    out: dict[str, float] = {}
    for key in ("accuracy", "macro_f1", "ece", "log_loss"):
        if isinstance(metrics.get("test", {}).get(key), (int, float)):
            out[f"test_{key}"] = float(metrics["test"][key])
        if isinstance(metrics.get("baseline", {}).get("test", {}).get(key), (int, float)):
            out[f"baseline_{key}"] = float(metrics["baseline"]["test"][key])
    for key, value in metrics.get("transfer_gain", {}).items():
        if isinstance(value, (int, float)):
            out[f"gain_{key}"] = float(value)
    for key, value in meta.get("timings_s", {}).items():
        out[f"seconds_{key}"] = float(value)
    return out


def epoch_metrics(meta: dict[str, Any]) -> list[dict[str, float]]:
    """Per-epoch rows of a fine-tuning run (empty for strategies that do not train in epochs)."""
    history = meta.get("strategy", {}).get("details", {}).get("history")
    if not isinstance(history, list):
        return []
    return [{k: float(v) for k, v in row.items() if isinstance(v, (int, float))}
            for row in history if isinstance(row, dict)]


def track_run(folder: str | Path, *, uri: str | None = None, experiment: str = "headstart",
              run_name: str | None = None) -> str:
    """Log the saved model folder ``folder`` as one MLflow run: parameters, per-epoch and final
    metrics, ``report.html`` and the whole folder under ``model/``. Returns the run id."""
    try:
        import mlflow
    except ImportError:
        raise MissingDependencyError("mlflow", "Tracking runs (--track)", extra="track") from None
    from mlflow.tracking import MlflowClient

    folder = Path(folder)
    meta = read_meta(folder)
    target = tracking_uri(uri)
    local = _is_local_default(target)
    try:
        if local:
            Path(LOCAL_STORE).mkdir(exist_ok=True)
        client = MlflowClient(tracking_uri=target)
        found = client.get_experiment_by_name(experiment)
        artifacts = (Path(LOCAL_STORE) / "artifacts").absolute().as_uri() if local else None
        experiment_id = (found.experiment_id if found is not None
                         else client.create_experiment(experiment, artifact_location=artifacts))
        run = client.create_run(experiment_id, run_name=run_name or folder.name,
                                tags={"headstart.folder": str(folder.absolute()),
                                      "headstart.command": str(meta.get("command", ""))[:5000]})
    except HeadstartError:
        raise
    except Exception as exc:  # an unreachable server, a store that refuses: name the place and the cause
        raise ConfigError(f"Cannot log to the MLflow tracking store {target}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200] if str(exc) else ''}",
                          fix="start the server (mlflow server --host 127.0.0.1 --port 5000) or check "
                              "--track-uri / MLFLOW_TRACKING_URI; without either, runs go to ./mlruns.") from None
    run_id = run.info.run_id
    status = "FAILED"
    try:
        for key, value in run_params(meta).items():
            client.log_param(run_id, key, value)
        for row in epoch_metrics(meta):
            step = int(row.get("epoch", 0))
            for key, value in row.items():
                if key != "epoch":
                    client.log_metric(run_id, key, value, step=step)
        for key, value in run_metrics(meta).items():
            client.log_metric(run_id, key, value)
        if (folder / "report.html").is_file():
            client.log_artifact(run_id, str(folder / "report.html"))
        client.log_artifacts(run_id, str(folder), artifact_path="model")
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status=status)
    return run_id


# -- headstart runs ----------------------------------------------------------------------------
def _strategy_words(strategy: dict[str, Any]) -> str:
    """The strategy as run; for ``auto``, what it chose too ("auto: lp-ft")."""
    kind = str(strategy.get("type", ""))
    chosen = strategy.get("chosen", {}).get("chosen_strategy")
    return f"{kind}: {chosen}" if chosen and chosen != kind else kind


def list_runs(dirs: list[str | Path]) -> list[dict[str, Any]]:
    """One row per saved model folder in ``dirs`` (each a model folder, or a folder of them): data,
    backbone, strategy, test accuracy, gain over the baseline, seconds and when, newest first.
    Folders that are not models are left out; a model folder whose record is broken gets a row
    with its error."""
    rows: list[dict[str, Any]] = []
    seen: set[Path] = set()
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise ConfigError(f"'{d}' is not a folder.", fix="pass model folders or folders that hold them, e.g. runs/.")
        candidates = [d] if (d / "headstart.json").is_file() else sorted(p for p in d.iterdir() if p.is_dir())
        for c in candidates:
            if c.resolve() in seen or not (c / "headstart.json").is_file():
                continue
            seen.add(c.resolve())
            try:
                meta = read_meta(c)
            except HeadstartError as err:
                rows.append({"folder": str(c), "error": err.message})
                continue
            m = meta.get("metrics", {})
            gain = m.get("transfer_gain", {})
            rows.append({"folder": str(c), "created": meta.get("created", ""),
                         "data": meta.get("data", {}).get("source", ""),
                         "n": meta.get("data", {}).get("n"),
                         "backbone": meta.get("backbone", {}).get("name", ""),
                         "strategy": _strategy_words(meta.get("strategy", {})),
                         "accuracy": m.get("test", {}).get("accuracy"), "n_test": m.get("test", {}).get("n"),
                         "accuracy_ci95": m.get("test", {}).get("ci95", {}).get("accuracy"),
                         "gain": gain.get("accuracy"), "gain_ci95": gain.get("ci95", {}).get("accuracy"),
                         "seconds": round(sum(v for v in meta.get("timings_s", {}).values()
                                              if isinstance(v, (int, float))), 1),
                         "report": (c / "report.html").is_file()})
    return sorted(rows, key=lambda r: str(r.get("created", "")), reverse=True)
