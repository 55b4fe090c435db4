"""``headstart predict`` on careless input: every input gets a row, bad items say why, nothing is skipped silently.

The models are a fixed head on tiny backbones (raw pixels; a 2-layer random BERT), saved as real
artifacts: the code paths are the point here, not the accuracy.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from conftest import write_csv, write_png
from headstart.errors import ConfigError, DataError


def save_model(backbone_name: str, dim: int, labels: list[str], out: Path) -> Path:
    from headstart.heads import LinearHead
    from headstart.backbones import create_backbone
    from headstart.model import TransferModel

    head = LinearHead(dim, len(labels))
    with torch.no_grad():
        torch.manual_seed(0)
        head.weight.normal_(0, 1)
        head.bias.zero_()
    TransferModel(create_backbone(backbone_name), head, labels).save(out)
    return out


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    return save_model("raw-pixels", 3072, ["a", "b"], tmp_path_factory.mktemp("runs") / "img")


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, tiny_bert_dir) -> Path:
    return save_model(f"hf:{tiny_bert_dir}", 32, ["news", "sport", "tech"], tmp_path_factory.mktemp("runs") / "txt")


def predict(*args: str, stdin: bytes | None = None):  # type: ignore[no-untyped-def]
    from headstart.cli.main import cli

    return CliRunner().invoke(cli, ["predict", *args], input=stdin)


def rows_of(result) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    assert result.exit_code == 0, (result.output, result.exception)
    return list(csv.DictReader(io.StringIO(result.stdout)))


def test_folder_lists_what_it_skips_and_a_bad_image_gets_an_error_row(image_run, tmp_path) -> None:
    folder = tmp_path / "incoming"
    for i in range(4):
        write_png(folder / f"{i}.png", value=i)
    good = (folder / "0.png").read_bytes()
    (folder / "cut.png").write_bytes(good[: len(good) // 2])  # truncated: decodes to an error
    (folder / "readme.txt").write_text("notes")
    (folder / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    out = tmp_path / "preds.csv"
    result = predict(str(image_run), str(folder), "-o", str(out), "--chunk-size", "2", "--batch-size", "1")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "Skipped 2 file(s) that are not images" in result.stderr
    assert "photo.heic" in result.stderr and "readme.txt" in result.stderr
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert [Path(r["where"]).name for r in rows] == ["0.png", "1.png", "2.png", "3.png", "cut.png"]
    bad = rows[-1]
    assert bad["prediction"] == "" and bad["p_a"] == "" and bad["error"].startswith("cannot decode the image")
    assert all(r["prediction"] in ("a", "b") and r["error"] == "" for r in rows[:4])
    assert "5 row(s) written" in result.stderr and "4 prediction(s), 1 with an error" in result.stderr


def test_named_files_that_do_not_decode_get_error_rows(image_run, tmp_path) -> None:
    ok = write_png(tmp_path / "ok.png")
    heic = tmp_path / "photo.heic"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic")
    rows = rows_of(predict(str(image_run), str(ok), str(heic)))
    assert [r["input"] for r in rows] == [str(ok), str(heic)]
    assert rows[0]["error"] == "" and "cannot decode the image" in rows[1]["error"]


def test_probabilities_are_rounded(image_run, tmp_path) -> None:
    rows = rows_of(predict(str(image_run), str(write_png(tmp_path / "x.png", value=3))))
    for key in ("confidence", "p_a", "p_b"):
        assert len(rows[0][key].split(".")[-1]) <= 4
    assert abs(float(rows[0]["p_a"]) + float(rows[0]["p_b"]) - 1) < 1e-3


def test_text_rows_show_the_text_and_refuse_blank_ones(text_run, tmp_path) -> None:
    long = "word " * 40
    table = write_csv(tmp_path / "new.csv", [("A short first text",), ("   ",), (long,), ("multi\nline text",)], header="text")
    rows = rows_of(predict(str(text_run), str(table)))
    assert [r["where"] for r in rows] == ["new.csv row 1 (line 2)", "new.csv row 2 (line 3)",
                                         "new.csv row 3 (line 4)", "new.csv row 4 (line 5)"]
    assert rows[0]["input"] == "A short first text" and rows[0]["prediction"] in ("news", "sport", "tech")
    assert rows[1]["error"] == "empty or whitespace-only text" and rows[1]["prediction"] == ""
    assert len(rows[2]["input"]) == 80 and rows[2]["input"].endswith("…")
    assert rows[3]["input"] == "multi line text"


def test_literal_texts_and_stdin(text_run, tmp_path) -> None:
    out = tmp_path / "p.jsonl"
    result = predict(str(text_run), "-", "--text", "first literal", "--text", " ", "-o", str(out),
                     stdin="from stdin one\r\n\nfrom stdin two\n".encode())
    assert result.exit_code == 0, (result.output, result.exception)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["where"] for r in rows] == ["stdin line 1", "stdin line 2", "stdin line 3", "--text 1", "--text 2"]
    assert [r["input"] for r in rows] == ["from stdin one", "", "from stdin two", "first literal", ""]
    assert [r["error"] is not None for r in rows] == [False, True, False, False, True]
    assert rows[1]["prediction"] is None and rows[1]["p_news"] is None


def test_a_text_that_is_not_a_file_points_to_text_flag(text_run) -> None:
    result = predict(str(text_run), "some text to classify")
    assert isinstance(result.exception, DataError)
    assert "'some text to classify' is not a file" in str(result.exception) and "--text" in str(result.exception)


def test_label_and_encoding_flags_reach_the_table(text_run, tmp_path) -> None:
    table = tmp_path / "cp.csv"
    table.write_bytes("body,topic\ncafé crème,news\nun match,sport\n".encode("cp1252"))
    refused = predict(str(text_run), str(table), "--text-column", "body")
    assert isinstance(refused.exception, DataError) and "--encoding cp1252" in str(refused.exception)
    rows = rows_of(predict(str(text_run), str(table), "--text-column", "body", "--label-column", "topic",
                           "--encoding", "cp1252"))
    assert [r["input"] for r in rows] == ["café crème", "un match"] and [r["label"] for r in rows] == ["news", "sport"]


def test_image_model_refuses_text_inputs(image_run) -> None:
    result = predict(str(image_run), "--text", "hello")
    assert isinstance(result.exception, ConfigError) and "--text and - (standard input) are for text models" in str(
        result.exception)
    assert isinstance(predict(str(image_run)).exception, ConfigError)  # nothing to predict


def test_failed_run_leaves_no_output_file(image_run, tmp_path, monkeypatch) -> None:
    from headstart.model import TransferModel

    out = tmp_path / "p.csv"
    out.write_text("previous\n")

    def boom(self, *a, **k):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(TransferModel, "predict_scored", boom)
    result = predict(str(image_run), str(write_png(tmp_path / "x.png")), "-o", str(out))
    assert isinstance(result.exception, RuntimeError)
    assert out.read_text() == "previous\n" and sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "x.png"]


def test_good_images_are_decoded_once(image_run, tmp_path, monkeypatch) -> None:
    # The per-item search for a bad image runs only after a chunk fails.
    from headstart.data import dataset as ds

    calls: list[str] = []
    real = ds.load_image

    def counting(item, where):  # type: ignore[no-untyped-def]
        calls.append(where)
        return real(item, where)

    monkeypatch.setattr(ds, "load_image", counting)
    files = [str(write_png(tmp_path / f"{i}.png", value=i)) for i in range(3)]
    rows_of(predict(str(image_run), *files))
    assert sorted(calls) == sorted(files)
