"""report.html: written by every fit, rebuilt by `headstart report`, opened in a real Chromium; and
`headstart explain` / `headstart runs` on saved model folders. Bad input writes nothing."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import write_csv
from headstart._io import is_owned
from headstart.artifact import MODEL_FOLDER
from headstart.cli.main import cli
from headstart.errors import ArtifactError, DataError

TOPICS = {
    "sport": ["the striker scored twice in the final", "a late goal won the cup for the home side",
              "the coach praised the defence after the match", "the tennis champion lost in three sets",
              "the runner broke the record at the games", "fans cheered as the team lifted the trophy",
              "the keeper saved a penalty in extra time", "the boxer won the title fight on points"],
    "money": ["the bank raised interest rates again", "shares fell sharply on the stock market",
              "the company reported record profits this year", "inflation rose faster than expected",
              "investors sold bonds after the budget", "the central bank warned about debt levels",
              "the firm cut jobs to lower its costs", "oil prices pushed the index higher"],
    "tech": ["the new phone has a faster chip", "the software update fixed a security flaw",
             "engineers built a smaller battery for laptops", "the app now runs on every tablet",
             "a startup released an open source database", "the network outage hit cloud services",
             "researchers trained a larger language model", "the console sold out on launch day"],
}


def artefact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots are kept: $HEADSTART_TEST_ARTEFACTS (CI keeps it), else a pytest temp folder."""
    root = os.environ.get("HEADSTART_TEST_ARTEFACTS")
    path = Path(root) if root else tmp_path_factory.getbasetemp() / "artefacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import write_png

    import headstart

    root = tmp_path_factory.mktemp("img")
    for c, name in enumerate(["cat", "dog", "owl"]):
        for i in range(8):
            write_png(root / "data" / name / f"{i}.png", value=100 * c + i)
    headstart.fit(root / "data", backbone="raw-pixels", out=root / "run", progress=False, val=0.25, test=0.25)
    return root / "run"


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> Path:
    import headstart

    root = tmp_path_factory.mktemp("txt")
    rows = [(t, label) for label, texts in TOPICS.items() for t in texts]
    write_csv(root / "news.csv", rows)
    headstart.fit(root / "news.csv", backbone=f"hf:{tiny_bert_dir}", out=root / "run", progress=False,
                  val=0.25, test=0.25)
    return root / "run"


def _sections(page: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", page)


def test_fit_writes_a_self_contained_report_in_the_model_folder(image_run: Path) -> None:
    page = (image_run / "report.html").read_text(encoding="utf-8")
    assert is_owned(image_run, MODEL_FOLDER)  # report.html is one of the model folder's own files
    meta = json.loads((image_run / "headstart.json").read_text())
    sections = _sections(page)
    for wanted in ("The data", "How the model was made", "Per class", "Transfer card"):
        assert wanted in sections
    assert any(s.startswith("How well it works") for s in sections)
    assert any(s.startswith("The most confident mistakes") for s in sections)
    assert f"{100 * meta['metrics']['test']['accuracy']:.1f}%" in page
    assert meta["metrics"]["baseline"]["name"] in page
    # Self-contained: no script, no link or source outside the file (images are data: URIs).
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page)
    assert page.count("data:image/png;base64,") >= 2  # confusion matrix and reliability diagram at least


def test_text_report_highlights_the_words_of_its_mistakes(text_run: Path, tmp_path: Path) -> None:
    from headstart.workflows.report import rebuild_report

    page = (text_run / "report.html").read_text(encoding="utf-8")
    meta = json.loads((text_run / "headstart.json").read_text())
    test = meta["metrics"]["test"]
    wrong = test["n"] - round(test["accuracy"] * test["n"])
    if not wrong:
        assert "made no mistake" in page
        return
    # Within a fit, a text model's mistakes are listed unexplained (Integrated Gradients would cost
    # about as much as the fit); `headstart report` explains them.
    assert '<span class="w"' not in page and "adds them" in page
    rebuilt = rebuild_report(text_run, out=tmp_path / "r.html").read_text(encoding="utf-8")
    assert '<span class="w"' in rebuilt and "integrated-gradients" in rebuilt


def test_report_stays_small_at_1000_test_items(image_run: Path) -> None:
    from headstart.data import from_arrays
    from headstart.model import load_model
    from headstart.workflows.report import build_report

    model = load_model(image_run)
    rng = np.random.default_rng(0)
    data = from_arrays(rng.integers(0, 256, (1000, 32, 32, 3), dtype=np.uint8),
                       labels=[model.label_names[i % 3] for i in range(1000)])
    y = np.arange(1000) % 3
    proba = rng.dirichlet(np.ones(3), size=1000)
    meta = json.loads((image_run / "headstart.json").read_text())
    page = build_report(model, meta, data, proba, y, evaluated_on="1000 items")
    assert len(page.encode()) < 5_000_000
    assert page.count("class='card-item'") == 4  # the four most confident mistakes, explained


def test_report_command_rebuilds_on_the_recorded_split_and_on_other_data(image_run: Path, tmp_path: Path) -> None:
    before = (image_run / "report.html").stat().st_mtime_ns
    res = CliRunner().invoke(cli, ["report", str(image_run)])
    assert res.exit_code == 0, res.output
    assert (image_run / "report.html").stat().st_mtime_ns != before
    page = (image_run / "report.html").read_text(encoding="utf-8")
    assert "held-out test split" in page and "class='card-item'" in page
    other = Path(json.loads((image_run / "headstart.json").read_text())["data"]["source"])
    res = CliRunner().invoke(cli, ["report", str(image_run), str(other), "--out", str(tmp_path / "other.html")])
    assert res.exit_code == 0, res.output
    assert "all 24 items" in (tmp_path / "other.html").read_text(encoding="utf-8")


def test_report_refuses_a_folder_that_is_not_a_model_and_writes_nothing(tmp_path: Path) -> None:
    from headstart.workflows.report import rebuild_report

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    with pytest.raises(ArtifactError, match="not a headstart model"):
        rebuild_report(tmp_path / "notes")
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["a.txt"]
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "notes")])
    assert res.exit_code != 0 and "not a headstart model" in (res.output + str(res.exception))


def test_report_on_data_of_the_other_modality_leaves_the_old_report(image_run: Path, tmp_path: Path) -> None:
    from headstart.workflows.report import rebuild_report

    old = (image_run / "report.html").read_bytes()
    table = write_csv(tmp_path / "t.csv", [("some text", "cat"), ("other text", "dog")])
    with pytest.raises(DataError, match="holds texts but the model takes images"):
        rebuild_report(image_run, table)
    assert (image_run / "report.html").read_bytes() == old


@pytest.mark.browser
@pytest.mark.parametrize("which", ["image_run", "text_run"])
def test_report_opens_in_chromium_without_errors_or_requests(browser, which: str, request: pytest.FixtureRequest,
                                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    run: Path = request.getfixturevalue(which)
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    url = (run / "report.html").absolute().as_uri()
    page.goto(url)
    page.wait_for_load_state("networkidle")
    shot = artefact_dir(tmp_path_factory) / f"report-{which.split('_')[0]}.png"
    page.screenshot(path=str(shot), full_page=True)
    heights = page.evaluate("[...document.images].map(i => i.naturalHeight)")
    page.close()
    assert errors == []
    assert [r for r in requests if not r.startswith("data:")] == [url]  # the file itself, nothing else
    assert heights and min(heights) > 0  # every inlined image decoded
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape[0] > 900 and pixels.std() > 10  # a long page with content, not a blank one


# -- headstart explain -------------------------------------------------------------------------
def test_explain_command_writes_overlays_and_a_page(image_run: Path, tmp_path: Path) -> None:
    meta = json.loads((image_run / "headstart.json").read_text())
    data = Path(meta["data"]["source"])
    items = [str(data / "cat" / "0.png"), str(data / "owl" / "1.png")]
    res = CliRunner().invoke(cli, ["explain", str(image_run), *items, "--out", str(tmp_path / "why"),
                                   "--samples", "32"])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "why" / "explanations.json").read_text())
    # raw pixels have no gradients: a model-agnostic method, occlusion (verified for images) first
    assert record["method"] == "occlusion"
    assert [i["item"] for i in record["items"]] == items
    for item in record["items"]:
        assert (tmp_path / "why" / item["overlay"]).read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64," in (tmp_path / "why" / "index.html").read_text(encoding="utf-8")


def test_explain_command_on_texts(text_run: Path, tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("the bank cut rates to help the economy", encoding="utf-8")
    res = CliRunner().invoke(cli, ["explain", str(text_run), "the goalkeeper saved the match", str(tmp_path / "one.txt"),
                                   "--out", str(tmp_path / "why"), "--steps", "8"])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "why" / "explanations.json").read_text())
    assert record["method"] == "integrated-gradients"
    assert [w["word"] for w in record["items"][1]["words"]] == "the bank cut rates to help the economy".split()


@pytest.mark.parametrize("args, message", [
    ([], "No items to explain"),
    (["cat.png", "--method", "gradcam"], "Unknown explanation method 'gradcam'"),
    (["cat.png", "--method", "grad-cam"], "cannot explain this model"),
    (["a sentence, not a picture"], "is a text, but this model takes images"),
])
def test_explain_command_refusals_write_nothing(image_run: Path, tmp_path: Path, args: list[str],
                                                message: str) -> None:
    from conftest import write_png

    write_png(tmp_path / "cat.png")
    args = [str(tmp_path / a) if a == "cat.png" else a for a in args]
    res = CliRunner().invoke(cli, ["explain", str(image_run), *args, "--out", str(tmp_path / "why")])
    assert res.exit_code != 0
    assert message in (res.output + str(res.exception))
    assert not (tmp_path / "why").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".why")]  # no temporary left behind


def test_explain_command_refuses_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["explain", str(tmp_path), "x", "--out", str(tmp_path / "why")])
    assert res.exit_code != 0 and "not a headstart model" in (res.output + str(res.exception))
    assert not (tmp_path / "why").exists()


# -- headstart runs ----------------------------------------------------------------------------
def test_runs_lists_model_folders_side_by_side(image_run: Path, text_run: Path, tmp_path: Path) -> None:
    from headstart.workflows.tracking import list_runs

    rows = list_runs([image_run.parent, text_run])
    folders = {r["folder"] for r in rows}
    assert folders == {str(image_run), str(text_run)}  # the data folder beside image_run is not a model
    by = {r["folder"]: r for r in rows}
    meta = json.loads((image_run / "headstart.json").read_text())
    assert by[str(image_run)]["accuracy"] == meta["metrics"]["test"]["accuracy"]
    assert by[str(image_run)]["gain"] == meta["metrics"]["transfer_gain"]["accuracy"]
    assert by[str(image_run)]["backbone"] == "raw-pixels" and by[str(image_run)]["strategy"] == "linear-probe"
    n_test = meta["metrics"]["test"]["n"]
    assert by[str(image_run)]["n_test"] == n_test
    res = CliRunner().invoke(cli, ["runs", str(image_run.parent), str(text_run)], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "raw-pixels" in res.output and "linear-probe" in res.output
    assert f"{100 * meta['metrics']['test']['accuracy']:.1f}% of {n_test}" in res.output  # the accuracy's sample size
    res = CliRunner().invoke(cli, ["runs", str(tmp_path / "missing")])
    assert res.exit_code != 0 and "is not a folder" in (res.output + str(res.exception))


def test_report_shows_autos_search_as_a_table() -> None:
    from headstart.report.html import _strategy_section

    search = [{"strategy": "linear-probe", "lr": None, "epochs": None, "val_accuracy": 0.75, "ci95": [0.4, 0.9],
               "seconds": 1.0, "status": "done", "note": "", "cv_accuracy": 0.8125, "cv_ci95": [0.7, 0.89],
               "cv_seconds": 2.0},
              {"strategy": "setfit", "lr": 6e-5, "epochs": 1, "val_accuracy": None, "ci95": None, "seconds": 0.0,
               "status": "over budget", "note": "needs ~90 s, 10 s left"}]
    meta = {"strategy": {"type": "auto", "chosen": {"chosen_strategy": "linear-probe", "C": 0.00031622776601683794},
                         "details": {"search": search}}}
    page = _strategy_section(meta)
    rows = re.findall(r"<tr>(.*?)</tr>", page)
    assert len(rows) == 3 and "on folds of train + val" in rows[0]
    cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", rows[1])]
    assert cells[0] == "linear-probe" and cells[3].startswith("75.0%") and cells[4].startswith("81.2%")
    assert cells[5] == "3.0" and cells[6] == "done"
    assert "over budget: needs ~90 s, 10 s left" in rows[2] and "6e-05" in rows[2]
    assert "C: 0.000316" in page and "0.00031622776601683794" not in page
