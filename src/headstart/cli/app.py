"""``headstart app``: the browser app (upload, check, ladder, fit, report, try, relabel, download)."""

from __future__ import annotations

import click

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@click.command("app", epilog="""\b
Examples:
  headstart app                                   # http://127.0.0.1:8080, data in ./headstart-app
  headstart app --data-dir ~/team-models --port 9000
  headstart app --host 0.0.0.0                    # prints an access token at first start
  HEADSTART_APP_TOKEN=s3cret headstart app --host 0.0.0.0
  headstart app --db postgresql+psycopg://user@db/headstart --workers 2
  HEADSTART_APP_DB=postgresql+psycopg://user:pw@db/headstart headstart app
\b
Projects, data versions, runs and jobs are kept in SQLite inside --data-dir (or the database
--db names; PostgreSQL needs pip install 'headstart[postgres]' and an existing database). Jobs
run one process each, --workers at a time and one per project; a job left running when the
server stopped is queued again at the next start (once; then it is marked interrupted).
Uploads: a .zip of class folders or a CSV / TSV / JSONL / Parquet table, at most
--max-upload-mb; a zip is checked entry by entry before anything is extracted (paths outside the
folder, links, encrypted entries, zip bombs, more than --max-files files are refused).
""")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback requires the access token.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default="headstart-app", show_default=True,
              help="Where uploads, models and the SQLite database live.")
@click.option("--db", "--database-url", "db", envvar="HEADSTART_APP_DB", default=None, show_envvar=True,
              help="A SQLAlchemy database URL instead of SQLite in --data-dir, e.g. "
                   "postgresql+psycopg://USER:PASSWORD@HOST:5432/DATABASE (the environment variable keeps "
                   "the password out of the process list).")
@click.option("--token", envvar="HEADSTART_APP_TOKEN", default=None, show_envvar=True,
              help="Access token for the login page (default off loopback: generated once, kept in "
                   "--data-dir/access-token).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Jobs that run at the same time.")
@click.option("--max-upload-mb", type=click.FloatRange(0.001, 100_000), default=200.0, show_default=True,
              help="Largest upload.")
@click.option("--max-files", type=click.IntRange(1, 10_000_000), default=20_000, show_default=True,
              help="Most files in an uploaded zip.")
def command(host: str, port: int, data_dir: str, db: str | None, token: str | None, workers: int,
            max_upload_mb: float, max_files: int) -> None:
    """Start the web app: a browser UI to build, check and try models without code."""
    from pathlib import Path

    from ..app import AppConfig, UploadLimits, access_token, create_app
    from ..app.db import hide_password
    from ..serve.server import check_port
    from ..serve.server import run as run_server

    check_port(host, port)
    folder = Path(data_dir)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    loopback = host in LOOPBACK
    shown = f"[{host}]" if ":" in host else host
    running = []

    def started(cap: int) -> None:
        running.append(True)
        login = " (log in with the access token)" if token else ""
        where = f" (database {hide_password(db)})" if db else ""
        click.echo(f"headstart app at http://{shown}:{port}{login}; data in {folder}{where}. Ctrl+C to stop.",
                   err=True)

    try:
        if not loopback and not token:
            token, new = access_token(folder)
            if new:
                click.echo(f"Access token (kept in {folder / 'access-token'}; give it to your team): {token}",
                           err=True)
        config = AppConfig(data_dir=folder, db_url=db, token=token, loopback=loopback, workers=workers,
                           limits=UploadLimits(max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                                               max_files=max_files))
        run_server(create_app(config), host, port, on_started=started)
    except BaseException:
        # A start that failed (an unreachable database, the port taken, Ctrl+C before it served) leaves no
        # data folder it made behind; once it has served, the folder holds the team's work.
        if created and not running:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
        raise
