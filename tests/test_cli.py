"""The command line, run as a real process the way a user runs it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_csv, write_png


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "headstart", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.fixture(scope="module")
def bbc_csv(tmp_path_factory, bbc_small) -> Path:
    return write_csv(tmp_path_factory.mktemp("csv") / "news.csv", zip(bbc_small.items, bbc_small.labels),
                     header="body,topic")


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, bbc_csv) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("runs") / "news"
    result = run("fit", str(bbc_csv), "--text-column", "body", "--label-column", "topic", "--max-length", "64",
                 "--out", str(out))
    return out, result


@pytest.mark.slow
def test_help_has_examples() -> None:
    top = run("--help")
    assert top.returncode == 0 and "Examples:" in top.stdout
    for cmd in ("check", "fit", "gap", "ladder", "eval", "predict", "backbones", "demo"):
        result = run(cmd, "--help")
        assert result.returncode == 0 and "Examples:" in result.stdout, cmd


def test_fit_prints_scores_and_writes_artifact(text_run, bbc_csv) -> None:
    out, result = text_run
    assert result.returncode == 0, result.stderr
    assert "Test accuracy" in result.stdout and "Baseline (TF-IDF" in result.stdout
    assert "accuracy points over the baseline" in result.stdout
    meta = json.loads((out / "headstart.json").read_text())
    assert meta["command"].startswith(f"headstart fit {bbc_csv} --text-column body")


def test_predict_writes_csv_with_probabilities(text_run, bbc_csv, tmp_path) -> None:
    out, _ = text_run
    preds = tmp_path / "preds.csv"
    result = run("predict", str(out), str(bbc_csv), "--text-column", "body", "-o", str(preds))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(open(preds, encoding="utf-8")))
    assert len(rows) == 150
    probs = [k for k in rows[0] if k.startswith("p_")]
    assert probs == ["p_business", "p_entertainment", "p_politics", "p_sports", "p_tech"]
    assert all(abs(sum(float(r[k]) for k in probs) - 1) < 1e-3 for r in rows)  # each rounded to 4 decimals
    assert rows[0]["where"] == "news.csv row 1 (line 2)" and 0 < len(rows[0]["input"]) <= 80
    truth = [r["topic"] for r in csv.DictReader(open(bbc_csv, encoding="utf-8"))]
    assert sum(r["prediction"] == t for r, t in zip(rows, truth)) / len(rows) > 0.85


def test_predict_streams_in_chunks_to_jsonl(text_run, bbc_csv, tmp_path) -> None:
    out, _ = text_run
    whole = tmp_path / "whole.jsonl"
    chunked = tmp_path / "chunked.jsonl"
    assert run("predict", str(out), str(bbc_csv), "--text-column", "body", "-o", str(whole)).returncode == 0
    result = run("predict", str(out), str(bbc_csv), "--text-column", "body", "-o", str(chunked),
                 "--chunk-size", "7", "--batch-size", "3")
    assert result.returncode == 0, result.stderr
    a = [json.loads(line) for line in whole.read_text().splitlines()]
    b = [json.loads(line) for line in chunked.read_text().splitlines()]
    assert len(a) == len(b) == 150
    assert [r["prediction"] for r in a] == [r["prediction"] for r in b]
    assert max(abs(r["confidence"] - s["confidence"]) for r, s in zip(a, b)) < 1e-5
    bad = run("predict", str(out), str(bbc_csv), "--text-column", "body", "-o", str(tmp_path / "p.xlsx"))
    assert bad.returncode == 2 and "--output must end in .csv, .jsonl or .json" in bad.stderr


def test_eval_writes_metrics(text_run, bbc_csv, tmp_path) -> None:
    out, _ = text_run
    target = tmp_path / "m.json"
    result = run("eval", str(out), str(bbc_csv), "--text-column", "body", "--label-column", "topic",
                 "--json", str(target))
    assert result.returncode == 0, result.stderr
    assert "Confusion matrix" in result.stdout
    metrics = json.loads(target.read_text())
    assert metrics["n"] == 150 and metrics["accuracy"] > 0.85


def test_check_exits_1_and_names_the_bad_file(image_folder) -> None:
    (image_folder / "owl" / "bad.png").write_bytes(b"not an image")
    result = run("check", str(image_folder))
    assert result.returncode == 1
    assert "owl/bad.png" in result.stdout and "Not ready" in result.stdout
    good = run("check", str(image_folder), "--json")
    assert json.loads(good.stdout)["findings"][0]["code"] == "corrupt-image"


@pytest.mark.slow
def test_user_error_is_one_line_without_traceback(tmp_path) -> None:
    result = run("fit", str(tmp_path / "missing.csv"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("Error: ") and "missing.csv' does not exist" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    debug = run("--debug", "fit", str(tmp_path / "missing.csv"))
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_unknown_backbone_suggests(tmp_path, bbc_csv) -> None:
    result = run("fit", str(bbc_csv), "--text-column", "body", "--backbone", "minilm-l66")
    assert result.returncode == 2 and "Did you mean 'minilm-l6'" in result.stderr


@pytest.mark.slow
def test_image_fit_and_predict_on_files_and_folder(image_folder, tmp_path) -> None:
    out = tmp_path / "img-run"
    fit = run("fit", str(image_folder), "--image-size", "32", "--out", str(out), "--val", "0.2", "--test", "0.3")
    assert fit.returncode == 0, fit.stderr
    files = [str(image_folder / "cat" / "0.png"), str(image_folder / "dog" / "1.png")]
    by_files = run("predict", str(out), *files)
    assert by_files.returncode == 0, by_files.stderr
    rows = list(csv.DictReader(by_files.stdout.splitlines()))
    assert [r["input"] for r in rows] == files
    unlabelled = tmp_path / "incoming"
    write_png(unlabelled / "a.png", value=7)
    write_png(unlabelled / "b.png", value=8, mode="L")
    by_folder = run("predict", str(out), str(unlabelled), "-o", str(tmp_path / "p.json"))
    assert by_folder.returncode == 0, by_folder.stderr
    assert [Path(r["input"]).name for r in json.loads((tmp_path / "p.json").read_text())] == ["a.png", "b.png"]


@pytest.mark.parametrize("command", ["check", "rank", "fit", "ladder", "eval", "predict", "gap"])
def test_every_command_that_reads_data_has_the_data_flags(command) -> None:
    from click.testing import CliRunner

    from headstart.cli.main import cli

    result = CliRunner().invoke(cli, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    for flag in ("--text-column", "--label-column", "--encoding"):
        assert flag in result.output, (command, flag)


def test_check_warns_about_suspicious_labels_and_reads_other_encodings(tmp_path) -> None:
    rows = "".join(f"text number {i},{label}\n" for i, label in enumerate(["NaN", "1", "1.0", "SPORT", "sport", "café"] * 3))
    path = tmp_path / "labels.csv"
    path.write_bytes(("text,label\n" + rows).encode("cp1252"))
    refused = run("check", str(path))
    assert refused.returncode == 2 and "probably cp1252" in refused.stderr and "--encoding cp1252" in refused.stderr
    result = run("check", str(path), "--encoding", "cp1252", "--json")
    assert result.returncode == 0, result.stderr
    found = {f["code"]: f for f in json.loads(result.stdout)["findings"]}
    assert {"missing-like-label", "label-variants", "label-number-variants"} <= set(found)
    assert "café" in json.loads(result.stdout)["class_counts"]


@pytest.mark.slow
def test_backbones_lists_the_zoo() -> None:
    result = run("backbones")
    assert result.returncode == 0
    for name in ("efficientnet-lite0", "efficientnet-lite2", "minilm-l6", "minilm-l3-onnx"):
        assert name in result.stdout


@pytest.mark.slow
def test_text_demo_runs_end_to_end(tmp_path) -> None:
    result = run("demo", "--task", "text", "--out", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    assert "reloaded model gives identical probabilities" in result.stdout
    assert "In plain words" in result.stdout and "percentage points" in result.stdout
    assert (tmp_path / "demo" / "transfer_card.md").is_file()


@pytest.mark.slow  # a subprocess that imports torch: seconds
def test_fit_unlabelled_reaches_the_strategy_and_a_strategy_that_ignores_it_says_so(tmp_path) -> None:
    pool = tmp_path / "pool"
    for i in range(3):
        write_png(pool / f"{i}.png", value=i)
    result = run("fit", "builtin:digits:6", "--backbone", "raw-pixels", "--unlabelled", str(pool),
                 "--out", str(tmp_path / "run"))
    assert result.returncode != 0
    assert "Unlabelled data was given, but the strategy 'linear-probe' does not use it" in result.stderr + result.stdout
    assert "--strategy pseudo-label or auto" in result.stderr + result.stdout
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a subprocess that imports torch: seconds
def test_fit_on_a_small_test_split_warns_once_and_points_to_it_in_the_summary(tmp_path) -> None:
    result = run("fit", "builtin:digits:8", "--backbone", "raw-pixels", "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    said = result.stdout + result.stderr
    assert said.count("the accuracy is known only to within about") == 1
    assert "Only 20 test items: treat this accuracy as a rough guide" in said


def test_a_probe_grid_warning_under_auto_says_where_cs_is_set(capsys) -> None:
    from types import SimpleNamespace

    from headstart.cli.fit import print_summary

    warning = "C=10000 is the largest value tried; the best may lie beyond it: add larger values to `Cs`."
    info = {"metrics": {"test": {"accuracy": 0.9, "macro_f1": 0.9, "ece": 0.05, "n": 500}},
            "strategy": {"type": "auto", "details": {"warnings": [warning]}}}
    print_summary(SimpleNamespace(info=info), None)
    said = " ".join(capsys.readouterr().out.split())
    assert "--strategy linear-probe --option Cs=" in said
