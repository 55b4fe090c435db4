"""The hostile and careless catalogue: every case a user can cause ends in one clear line.

Each row of CASES is a command line and the files it runs on; the test runs the real CLI
(in-process, through ``headstart.cli.main.main``), and asserts the exit code, that no traceback or
"bug" line reached the user, and that the message names the cause. Cases that used to be silently
wrong assert the right outcome instead (a warning, a refused write, an untouched folder).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import struct
import unicodedata
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import headstart
from conftest import write_csv, write_png
from headstart.cli.main import main


@dataclass
class Case:
    name: str
    argv: Callable[[dict], list[str]]  # from the fixtures' paths to the command line
    code: int  # expected exit code (0: it must work)
    says: str  # regex that the output (stdout + stderr) must match
    setup: Callable[[dict], None] = lambda ctx: None
    after: Callable[[dict], None] = lambda ctx: None  # extra checks: nothing lost, nothing left behind
    patch: Callable[[pytest.MonkeyPatch, dict], None] | None = None
    tags: tuple[str, ...] = field(default=())


# -- helpers that build the bad inputs ---------------------------------------------------------

def _user_folder(ctx: dict) -> None:
    keep = ctx["tmp"] / "keep"
    keep.mkdir()
    (keep / "NOTES.txt").write_text("notes")


def _notes_intact(ctx: dict) -> None:
    assert (ctx["tmp"] / "keep" / "NOTES.txt").read_text() == "notes"
    assert sorted(p.name for p in (ctx["tmp"] / "keep").iterdir()) == ["NOTES.txt"]


def _stray_ckpt(ctx: dict) -> None:
    (ctx["tmp"] / "X.ckpt").mkdir()
    (ctx["tmp"] / "X.ckpt" / "mine.txt").write_text("mine")


def _ckpt_intact(ctx: dict) -> None:
    assert (ctx["tmp"] / "X.ckpt" / "mine.txt").read_text() == "mine" and not (ctx["tmp"] / "X").exists()


def _csv(name: str, text: str, encoding: str = "utf-8") -> Callable[[dict], None]:
    def make(ctx: dict) -> None:
        (ctx["tmp"] / name).write_bytes(text.encode(encoding))
    return make


def _labels_csv(labels: list[str]) -> Callable[[dict], None]:
    def make(ctx: dict) -> None:
        rows = [(f"text number {i} about {lab}", lab) for i, lab in enumerate(labels * 6)]
        write_csv(ctx["tmp"] / "labels.csv", rows)
    return make


def _xlsx_as_csv(ctx: dict) -> None:
    with zipfile.ZipFile(ctx["tmp"] / "sheet.csv", "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")


def _nfc_nfd_folders(ctx: dict) -> None:
    root = ctx["tmp"] / "pastry"
    for i, name in enumerate([unicodedata.normalize("NFC", "éclair"), unicodedata.normalize("NFD", "éclair"), "tart"]):
        for j in range(5):
            write_png(root / name / f"{j}.png", value=40 * i + j)


def _sixteen_bit(ctx: dict) -> None:
    root = ctx["tmp"] / "depth"
    for cls, level in (("dark", 8000), ("bright", 56000)):
        for j in range(6):
            arr = np.full((16, 16), level + 97 * j, dtype=np.uint16)
            path = root / cls / f"{j}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path)  # mode I;16


def _predict_folder(ctx: dict) -> None:
    root = ctx["tmp"] / "incoming"
    for j in range(3):
        write_png(root / f"{j}.png", value=j)
    (root / "readme.txt").write_text("not an image")
    (root / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    good = root / "3.png"
    write_png(good, value=3)
    (root / "broken.png").write_bytes(good.read_bytes()[:40])  # a truncated PNG


def _copy_model(ctx: dict, edit: Callable[[dict], None]) -> None:
    dst = ctx["tmp"] / "model"
    shutil.copytree(ctx["model"], dst)
    meta = json.loads((dst / "headstart.json").read_text())
    edit(meta)
    (dst / "headstart.json").write_text(json.dumps(meta))


def _meta_edit(edit: Callable[[dict], None]) -> Callable[[dict], None]:
    return lambda ctx: _copy_model(ctx, edit)


def _weights(data: bytes | None = None, truncate: bool = False) -> Callable[[dict], None]:
    def make(ctx: dict) -> None:
        dst = ctx["tmp"] / "model"
        shutil.copytree(ctx["model"], dst)
        w = dst / "model.safetensors"
        w.write_bytes(w.read_bytes()[:100] if truncate else data)  # type: ignore[arg-type]
    return make


def _remote_code(ctx: dict) -> None:
    def edit(meta: dict) -> None:
        meta["backbone"]["name"] = "hf:backbone"
    _copy_model(ctx, edit)
    code = ctx["tmp"] / "model" / "backbone"
    code.mkdir()
    (code / "config.json").write_text(json.dumps({"model_type": "bert", "auto_map": {"AutoModel": "evil.Model"}}))
    (code / "evil.py").write_text("import os\nos.system('touch PWNED')\n")


def _cwd_backbone(ctx: dict) -> None:
    def edit(meta: dict) -> None:
        meta["backbone"]["name"] = "hf:../../somewhere/else"
    _copy_model(ctx, edit)


def _scrambled_shard(ctx: dict) -> None:
    # The shards this module's fits wrote (the session's cache also holds other tests' shards, which
    # the fit below would never read): every one of them is scrambled.
    shards = sorted(p for p in Path(os.environ["HEADSTART_CACHE"]).rglob("shard-*.safetensors")
                    if p.stat().st_mtime >= ctx["started"] - 1)
    assert shards, "the model fixture filled the cache"
    for shard in shards:
        raw = bytearray(shard.read_bytes())
        header = struct.unpack("<Q", raw[:8])[0]
        for k in range(8 + header + 64, min(len(raw), 8 + header + 4096), 7):
            raw[k] ^= 0x5A
        shard.write_bytes(bytes(raw))
    ctx["scrambled"] = shards[0]


def _disk_full(monkeypatch: pytest.MonkeyPatch, ctx: dict) -> None:
    import safetensors.torch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(args[1]) if len(args) > 1 else None)
    monkeypatch.setattr(safetensors.torch, "save_file", full)


def _old_model_survives(ctx: dict) -> None:
    out = ctx["tmp"] / "old"
    assert headstart.load(out).label_names == headstart.load(ctx["model"]).label_names
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".old")] == []


def _permission_denied(monkeypatch: pytest.MonkeyPatch, ctx: dict) -> None:
    # Tests run as root, where chmod 000 does not stop a read: refuse it the way the kernel would.
    import builtins

    secret = str(ctx["tmp"] / "secret.csv")
    real_open, real_read = builtins.open, Path.read_bytes

    def guarded_open(file, *args, **kwargs):
        if str(file) == secret:
            raise PermissionError(errno.EACCES, "Permission denied", secret)
        return real_open(file, *args, **kwargs)

    def guarded_read(self):
        if str(self) == secret:
            raise PermissionError(errno.EACCES, "Permission denied", secret)
        return real_read(self)
    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(Path, "read_bytes", guarded_read)


def _fit(data: str, *extra: str) -> Callable[[dict], list[str]]:
    return lambda ctx: ["fit", data.format(**{k: str(v) for k, v in ctx.items()}), "--image-size", "32",
                        "--no-baseline", *[e.format(**{k: str(v) for k, v in ctx.items()}) for e in extra]]


def _cmd(*args: str) -> Callable[[dict], list[str]]:
    return lambda ctx: [a.format(**{k: str(v) for k, v in ctx.items()}) for a in args]


CASES = [
    # -- outputs: nothing that is not headstart's is ever replaced
    Case("out-user-folder", _fit("{digits}", "--out", "{tmp}/keep"), 2, r"'.*keep' is a folder with other files in it "
         r"\(NOTES\.txt\) and not a headstart model", _user_folder, _notes_intact),
    Case("out-is-the-data", _fit("{images}", "--out", "{images}"), 2, r"would overlap the data"),
    Case("out-inside-the-data", _fit("{images}", "--out", "{images}/cat/model"), 2, r"would overlap the data"),
    Case("unrelated-ckpt-folder", _fit("{digits}", "--out", "{tmp}/X"), 2,
         r"'.*X\.ckpt' is a folder with other files in it \(mine\.txt\) and not a headstart checkpoint",
         _stray_ckpt, _ckpt_intact),
    Case("out-existing-model", _fit("{digits}", "--out", "{model}"), 2, r"already holds a headstart model.*--overwrite"),
    Case("disk-full-on-save", _fit("{digits}", "--out", "{tmp}/old", "--overwrite"), 2,
         r"No space left on device.*the disk is full.*earlier models were not touched",
         lambda ctx: shutil.copytree(ctx["model"], ctx["tmp"] / "old"), _old_model_survives, patch=_disk_full),
    # -- arguments
    Case("val-test-zero", _fit("{digits}", "--val", "0", "--test", "0"), 2, r"--test.*0\.0 is not in the range"),
    Case("image-size-zero", _cmd("fit", "{digits}", "--image-size", "0"), 2, r"image.size.*got 0"),
    Case("device-tpu", _fit("{digits}", "--device", "tpu"), 2, r"device.*tpu.*cpu"),
    Case("option-list-of-numbers", _fit("{digits}", "--option", "Cs=0.1,1", "--out", "{tmp}/cs"), 0,
         r"Test accuracy", after=lambda ctx: headstart.load(ctx["tmp"] / "cs").info["strategy"]["config"]["Cs"] == [0.1, 1.0]),
    Case("option-bad-number", _fit("{digits}", "--option", "Cs=0.1,x"), 2, r"`Cs` expects a number, got 'x'"),
    Case("option-bool-typo", _fit("{digits}", "--strategy", "full", "--option", "restore_best=ture"), 2,
         r"restore_best.*ture"),
    Case("resume-other-data", _cmd("fit", "{digits}", "--image-size", "32", "--strategy", "full", "--epochs", "1",
                                   "--no-baseline", "--out", "{tmp}/r", "--resume", "--val", "0.3"), 2,
         r"checkpoint .* was made by another run: the training or validation data",
         lambda ctx: shutil.copytree(ctx["ckpt"], ctx["tmp"] / "r.ckpt")),
    # -- data
    Case("nfc-nfd-classes", _cmd("check", "{tmp}/pastry"), 0, r"(?s)clair: 10.*2 spellings.*Unicode form and were merged",
         _nfc_nfd_folders),
    Case("sixteen-bit-png", _cmd("check", "{tmp}/depth"), 0, r"(?s)^(?!.*pure white).*", _sixteen_bit,
         lambda ctx: _bright_beats_dark(ctx)),
    Case("label-nan", _cmd("check", "{tmp}/labels.csv"), 0, r"(?i)nan", _labels_csv(["NaN", "sport", "tech"])),
    Case("label-number-variants", _cmd("check", "{tmp}/labels.csv"), 0, r"'1'.*'1\.0'|'1\.0'.*'1'",
         _labels_csv(["1", "1.0", "2"])),
    Case("label-case-variants", _cmd("check", "{tmp}/labels.csv"), 0, r"(?i)'SPORT'.*'sport'|'sport'.*'SPORT'",
         _labels_csv(["SPORT", "sport", "tech"])),
    Case("jsonl-text-is-a-list", _cmd("check", "{tmp}/t.jsonl"), 2, r"t\.jsonl.*line 1.*(list|string)",
         _csv("t.jsonl", '{"text": ["a", "b"], "label": "x"}\n{"text": "fine", "label": "y"}\n')),
    Case("csv-1mb-cell", _cmd("check", "{tmp}/big.csv"), 0, r"(?s).*",
         _csv("big.csv", "text,label\n" + "".join(f"\"{'w ' * 500_000 if i == 0 else 'short text ' + str(i)}\",{'ab'[i % 2]}\n"
                                                   for i in range(12)))),
    Case("csv-unclosed-quote", _cmd("check", "{tmp}/q.csv"), 2, r"q\.csv.*(quote|line 3)",
         _csv("q.csv", "text,label\nfine one,a\n\"broken,b\n" + "".join(f"row {i},a\n" for i in range(16)))),
    Case("csv-latin-1", _cmd("check", "{tmp}/l1.csv"), 2, r"l1\.csv.*(cp1252|latin).*--encoding",
         _csv("l1.csv", "text,label\n" + "".join(f"caf\u00e9 cr\u00e8me {i},{'ab'[i % 2]}\n" for i in range(12)), "latin-1")),
    Case("csv-latin-1-with-encoding", _cmd("check", "{tmp}/l1.csv", "--encoding", "latin-1"), 0, r"(?s).*",
         _csv("l1.csv", "text,label\n" + "".join(f"caf\u00e9 cr\u00e8me {i},{'ab'[i % 2]}\n" for i in range(12)), "latin-1")),
    Case("xlsx-renamed-csv", _cmd("check", "{tmp}/sheet.csv"), 2, r"(?i)sheet\.csv.*(excel|workbook|zip)", _xlsx_as_csv),
    Case("unreadable-file", _cmd("check", "{tmp}/secret.csv"), 2, r"secret\.csv.*(ermission)",
         _csv("secret.csv", "text,label\na,b\n"), patch=_permission_denied),
    # -- predict: nothing skipped silently, one bad item does not stop the rest
    Case("predict-skips-listed", _cmd("predict", "{model}", "{tmp}/incoming", "-o", "{tmp}/p.csv"), 0,
         r"(?s)readme\.txt.*photo\.heic|photo\.heic.*readme\.txt", _predict_folder, lambda ctx: _predict_rows(ctx)),
    Case("predict-literal-text-on-image-model", _cmd("predict", "{model}", "--text", "hello"), 2, r"(?i)image"),
    # -- artifacts are data, never code
    Case("artifact-remote-code", _cmd("predict", "{tmp}/model", "{images}/cat/0.png"), 2,
         r"(?i)(custom code|\.py|auto_map)", _remote_code, lambda ctx: not (Path.cwd() / "PWNED").exists()),
    Case("artifact-backbone-outside", _cmd("predict", "{tmp}/model", "{images}/cat/0.png"), 2,
         r"(?i)(inside|outside|escape)", _cwd_backbone),
    Case("artifact-meta-list", _cmd("predict", "{tmp}/model", "{images}/cat/0.png"), 2, r"headstart\.json.*object",
         lambda ctx: (shutil.copytree(ctx["model"], ctx["tmp"] / "model"),
                      (ctx["tmp"] / "model" / "headstart.json").write_text("[1, 2]"))),
    Case("artifact-missing-key", _cmd("predict", "{tmp}/model", "{images}/cat/0.png"), 2, r"labels",
         _meta_edit(lambda m: m.pop("labels"))),
    Case("artifact-image-size-1", _cmd("predict", "{tmp}/model", "{images}/cat/0.png"), 2, r"image_size",
         _meta_edit(lambda m: m["backbone"]["card"]["input"].__setitem__("image_size", 1))),
    Case("artifact-short-labels", _cmd("predict", "{tmp}/model", "{images}/cat/0.png"), 2, r"(?i)classes.*labels",
         _meta_edit(lambda m: m.__setitem__("labels", m["labels"][:3]))),
    Case("artifact-truncated-weights", _cmd("predict", "{tmp}/model", "{images}/cat/0.png"), 2,
         r"model\.safetensors", _weights(truncate=True)),
    Case("artifact-pickled-weights", _cmd("predict", "{tmp}/model", "{images}/cat/0.png"), 2, r"model\.safetensors",
         _weights(b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00.")),
    Case("not-a-model", _cmd("predict", "{images}", "{images}/cat/0.png"), 2, r"not a headstart model"),
    # -- faults
    Case("scrambled-cache-shard", _fit("{digits}", "--out", "{tmp}/again"), 0, r"(?i)(checksum|damaged|corrupt)",
         _scrambled_shard),
]


def _bright_beats_dark(ctx: dict) -> None:
    from headstart.data import load_data

    data = load_data(str(ctx["tmp"] / "depth"))
    levels = {lab: np.asarray(data.load(i)).mean() for i, lab in enumerate(data.labels)}
    assert levels["dark"] < 64 < 192 < levels["bright"], levels  # 8000/65535 ~ 31, 56000/65535 ~ 218


def _predict_rows(ctx: dict) -> None:
    import csv

    rows = list(csv.DictReader(open(ctx["tmp"] / "p.csv", encoding="utf-8")))
    assert len(rows) == 5  # 4 good + the broken one, with its error
    bad = [r for r in rows if r.get("error")]
    assert len(bad) == 1 and "broken.png" in bad[0]["input"] + bad[0].get("where", "")


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("catalogue")
    digits = root / "digits"
    from headstart.data import load_data

    data = load_data("builtin:digits:8")  # 80 real 8x8 digits
    for i in range(len(data)):
        (digits / data.labels[i]).mkdir(parents=True, exist_ok=True)
        data.load(i).save(digits / data.labels[i] / f"{i:03d}.png")
    images = root / "images"
    for c, name in enumerate(["cat", "dog", "owl"]):
        for i in range(6):
            write_png(images / name / f"{i}.png", value=100 * c + i)
    model = root / "model"
    started = time.time()
    headstart.fit(str(digits), backbone="efficientnet-lite0", image_size=32, out=model, progress=False, baseline=False)
    # a checkpoint of a fine-tune on the same folder, kept as the run would leave it after a crash
    ckpt = root / "ft.ckpt"
    headstart.fit(str(digits), backbone="efficientnet-lite0", image_size=32, strategy="full",
                  options={"epochs": 1, "batch_size": 16}, progress=False, baseline=False, checkpoint_dir=ckpt)
    return {"digits": digits, "images": images, "model": model, "ckpt": ckpt, "started": started}


# -- what a hostile review found after the first round ------------------------------------------

def _fake_model_with_notes(ctx: dict) -> None:
    uf = ctx["tmp"] / "uf"
    uf.mkdir()
    (uf / "notes.txt").write_text("precious")
    (uf / "headstart.json").write_text('{"my": "config"}')


def _model_with_user_file(ctx: dict) -> None:
    shutil.copytree(ctx["model"], ctx["tmp"] / "m2")
    (ctx["tmp"] / "m2" / "my_notes.txt").write_text("precious")


def _fifo_folder(ctx: dict) -> None:
    root = ctx["tmp"] / "pf"
    write_png(root / "0.png", value=1)
    os.mkfifo(root / "fifo.png")


def _nan_weights(ctx: dict) -> None:
    from safetensors.torch import load_file, save_file

    dst = ctx["tmp"] / "model"
    shutil.copytree(ctx["model"], dst)
    tensors = {k: v * float("nan") for k, v in load_file(str(dst / "model.safetensors")).items()}
    save_file(tensors, str(dst / "model.safetensors"))


def _interrupted_checkpoint(ctx: dict) -> None:
    shutil.copytree(ctx["ckpt"], ctx["tmp"] / "rs.ckpt")


CASES += [
    Case("overwrite-fake-marker", _fit("{digits}", "--out", "{tmp}/uf", "--overwrite"), 2,
         r"'.*uf' is a folder with other files in it .* not a headstart model", _fake_model_with_notes,
         lambda ctx: (ctx["tmp"] / "uf" / "notes.txt").read_text() == "precious"),
    Case("overwrite-model-with-user-files", _fit("{digits}", "--out", "{tmp}/m2", "--overwrite"), 2,
         r"holds a headstart model and also files headstart did not write \(my_notes\.txt\)", _model_with_user_file,
         lambda ctx: (ctx["tmp"] / "m2" / "my_notes.txt").read_text() == "precious"),
    Case("probe-keeps-another-runs-checkpoint", _fit("{digits}", "--out", "{tmp}/rs", "--resume"), 0,
         r"keeps no checkpoint \(nothing to resume\)", _interrupted_checkpoint,
         lambda ctx: (ctx["tmp"] / "rs.ckpt" / "headstart-checkpoint.json").is_file()),
    Case("predict-fifo-in-folder", _cmd("predict", "{model}", "{tmp}/pf"), 0, r"fifo\.png \(not a regular file",
         _fifo_folder),
    Case("out-dot", _fit("{digits}", "--out", "."), 2, r"is a folder with other files in it \(notes\.txt\)",
         lambda ctx: (ctx["tmp"] / "notes.txt").write_text("mine"),
         lambda ctx: sorted(p.name for p in ctx["tmp"].iterdir()) == ["notes.txt"]),
    Case("out-empty", _fit("{digits}", "--out", ""), 2, r"--out is empty"),
    Case("artifact-nan-weights", _cmd("predict", "{tmp}/model", "{images}/cat/0.png"), 2, r"NaN or infinite",
         _nan_weights),
    Case("artifact-deep-json", _cmd("predict", "{tmp}/model", "{images}/cat/0.png"), 2,
         r"headstart\.json is not a model description headstart wrote \(RecursionError",
         lambda ctx: (shutil.copytree(ctx["model"], ctx["tmp"] / "model"),
                      (ctx["tmp"] / "model" / "headstart.json").write_text("[" * 100_000 + "]" * 100_000))),
    Case("artifact-huge-int", _cmd("predict", "{tmp}/model", "{images}/cat/0.png"), 2,
         r"headstart\.json is not a model description headstart wrote \(ValueError",
         lambda ctx: (shutil.copytree(ctx["model"], ctx["tmp"] / "model"),
                      (ctx["tmp"] / "model" / "headstart.json").write_text(
                          (ctx["model"] / "headstart.json").read_text().replace('"seed": 0', '"seed": ' + "9" * 5000)))),
    Case("artifact-huge-head", _cmd("predict", "{tmp}/model", "{images}/cat/0.png"), 2, r"head\.(inner\.)?hidden",
         _meta_edit(lambda m: (m["head"].get("inner", m["head"]).update({"type": "mlp", "hidden": 200_000_000,
                                                                         "dropout": 0.1})))),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_catalogue_case(case: Case, fixtures: dict, tmp_path: Path, capsys, monkeypatch) -> None:
    ctx = {**fixtures, "tmp": tmp_path}
    monkeypatch.chdir(tmp_path)
    case.setup(ctx)
    if case.patch is not None:
        case.patch(monkeypatch, ctx)
    with pytest.raises(SystemExit) as exit_info:
        main(case.argv(ctx))
        raise SystemExit(0)
    monkeypatch.undo()
    output = capsys.readouterr()
    text = output.out + output.err
    assert exit_info.value.code == case.code, text[-3000:]
    assert "Traceback" not in text and "This is a bug in headstart" not in text, text[-3000:]
    assert re.search(case.says, text, flags=re.S), text[-3000:]
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".*.tmp-*"))  # nothing half-written
    result = case.after(ctx)
    assert result is None or result
