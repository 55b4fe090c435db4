"""Tracking: a fitted run logged to a real MLflow tracking server on 127.0.0.1 (started here as a
subprocess) and read back with MlflowClient; `fit --track` to a local store."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import write_csv

pytest.importorskip("mlflow", reason="the 'track' extra (pip install 'headstart[track]') is part of the test extra")

TEXTS = {"sport": ["the striker scored twice", "a late goal won the cup", "the keeper saved a penalty",
                   "the runner broke the record", "fans cheered the team", "the boxer won on points"],
         "money": ["the bank raised rates", "shares fell sharply today", "profits hit a record",
                   "inflation rose again", "investors sold bonds", "oil prices pushed higher"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    exe = Path(sys.executable).with_name("mlflow")
    cmd = [str(exe), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'store.db'}", "--artifacts-destination", str(root / "artifacts")]
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=open(root / "server.log", "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 420  # a busy shared runner took 150 s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def finetuned_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> Path:
    """A fine-tuned text model (two epochs, so it has per-epoch metrics)."""
    import headstart

    root = tmp_path_factory.mktemp("tracked")
    write_csv(root / "news.csv", [(t, label) for label, texts in TEXTS.items() for t in texts])
    headstart.fit(root / "news.csv", backbone=f"hf:{tiny_bert_dir}", strategy="full", options={"epochs": 2},
                  out=root / "run", progress=False, val=0.25, test=0.25)
    return root / "run"


def test_run_logged_to_a_real_server_reads_back(mlflow_server: str, finetuned_run: Path) -> None:
    from mlflow.tracking import MlflowClient

    from headstart.workflows.tracking import track_run

    meta = json.loads((finetuned_run / "headstart.json").read_text())
    run_id = track_run(finetuned_run, uri=mlflow_server, experiment="headstart-test")
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["strategy"] == "full"
    assert run.data.params["backbone"] == meta["backbone"]["name"]
    assert run.data.params["data.n"] == "12"
    assert run.data.metrics["test_accuracy"] == pytest.approx(meta["metrics"]["test"]["accuracy"])
    assert run.data.metrics["baseline_accuracy"] == pytest.approx(meta["metrics"]["baseline"]["test"]["accuracy"])
    history = meta["strategy"]["details"]["history"]
    per_epoch = client.get_metric_history(run_id, "val_accuracy")
    assert [m.step for m in per_epoch] == [h["epoch"] for h in history]
    assert [m.value for m in per_epoch] == pytest.approx([h["val_accuracy"] for h in history])
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.html", "model"} <= top
    model_files = {Path(a.path).name for a in client.list_artifacts(run_id, "model")}
    assert {"headstart.json", "model.safetensors", "report.html", "transfer_card.md"} <= model_files
    local = client.download_artifacts(run_id, "model/headstart.json", dst_path=str(finetuned_run.parent / "dl"))
    assert json.loads(Path(local).read_text()) == meta


def test_fit_track_logs_to_a_local_store(tmp_path: Path, tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    from headstart.cli.main import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_csv(tmp_path / "news.csv", [(t, label) for label, texts in TEXTS.items() for t in texts])
    res = CliRunner().invoke(cli, ["fit", "news.csv", "--backbone", f"hf:{tiny_bert_dir}", "--out", "runs/a",
                                   "--val", "0.25", "--test", "0.25", "--track"])
    assert res.exit_code == 0, res.output
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("headstart")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].data.params["strategy"] == "linear-probe"
    assert runs[0].info.run_name == "a"
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert "report.html" in artifacts and (tmp_path / "mlruns" / "artifacts").is_dir()


def test_bad_places_are_named(finetuned_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from headstart.errors import ArtifactError, ConfigError
    from headstart.workflows.tracking import track_run

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(ArtifactError, match="not a headstart model"):
        track_run(tmp_path / "not-a-model", uri=(tmp_path / "store").as_uri())
    assert not (tmp_path / "store").exists()  # refused before anything was logged
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    with pytest.raises(ConfigError, match=f"Cannot log to the MLflow tracking store {url}"):
        track_run(finetuned_run, uri=url)


def test_tracking_needs_no_server_to_name_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    from headstart.workflows.tracking import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri() == f"sqlite:///{Path.cwd() / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"
    assert tracking_uri("http://example:1") == "http://example:1"


def test_runs_lists_what_auto_chose_beside_auto() -> None:
    from headstart.workflows.tracking import _strategy_words

    assert _strategy_words({"type": "auto", "chosen": {"chosen_strategy": "lp-ft", "chosen_lr": 2e-5}}) == "auto: lp-ft"
    assert _strategy_words({"type": "linear-probe", "chosen": {"C": 1.0}}) == "linear-probe"
    assert _strategy_words({}) == ""
