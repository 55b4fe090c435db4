"""``headstart serve RUN``: a REST server (FastAPI + uvicorn) with request batching."""

from __future__ import annotations

import click

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@click.command("serve", epilog="""\b
Examples:
  headstart serve runs/photos                              # http://127.0.0.1:8000/docs
  headstart serve runs/tickets --port 9000 --max-batch 64 --max-wait-ms 10
  HEADSTART_TOKEN=s3cret headstart serve runs/tickets --host 0.0.0.0
  curl -s localhost:8000/predict -H 'content-type: application/json' -d '{"texts": ["refund please"]}'
  curl -s localhost:8000/predict -F files=@cat.jpg -F files=@dog.jpg
  curl -s host:8000/predict -H "Authorization: Bearer $HEADSTART_TOKEN" -F files=@cat.jpg
\b
Limits: bodies over --max-body-mb and more than --max-items items are refused (413); an image
over 25 megapixels (a JPEG: even when read at 1/8 scale) or with an aspect ratio over 20:1 is
refused from its header before it is decoded. At most --max-connections connections are held
(fewer if the open-file limit is lower); at the cap an idle connection is closed for a new client
(those that never completed a request first), and a client must send its request headers within
10 s. SIGTERM stops the server within about 5 s, with exit code 0.
""")
@click.argument("run")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs --token.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--token", envvar="HEADSTART_TOKEN", default=None, show_envvar=True,
              help="Require `Authorization: Bearer TOKEN` on every path but /health.")
@click.option("--engine", type=click.Choice(["auto", "onnx", "torch"]), default="auto", show_default=True,
              help="auto: the ONNX export when there is one, else torch.")
@click.option("--int8", is_flag=True, help="Serve the int8 ONNX model.")
@click.option("--max-batch", type=click.IntRange(1, 4096), default=32, show_default=True,
              help="Items per forward pass (1 disables batching).")
@click.option("--max-wait-ms", type=click.FloatRange(0, 1000), default=5.0, show_default=True,
              help="How long a request may wait for others.")
@click.option("--max-items", type=click.IntRange(1, 1024), default=64, show_default=True, help="Items per request.")
@click.option("--max-body-mb", type=click.FloatRange(0.001, 1024), default=16.0, show_default=True,
              help="Request body limit.")
@click.option("--max-connections", type=click.IntRange(16, 100_000), default=1000, show_default=True,
              help="Open connections held at once.")
def command(run: str, host: str, port: int, token: str | None, engine: str, int8: bool, max_batch: int,
            max_wait_ms: float, max_items: int, max_body_mb: float, max_connections: int) -> None:
    """Serve RUN: POST /predict, GET /health, GET /metadata, docs at /docs."""
    import logging

    from ..errors import ConfigError
    from ..serve import Limits, create_app
    from ..serve.server import check_port
    from ..serve.server import run as run_server

    if host not in LOOPBACK and not token:
        raise ConfigError(f"--host {host} exposes the server beyond this machine without a token.",
                          fix="set --token or HEADSTART_TOKEN (clients send `Authorization: Bearer TOKEN`), "
                              "or keep the default --host 127.0.0.1.")
    check_port(host, port)  # before the model is loaded: seconds, for nothing, if the port is taken
    body = int(max_body_mb * 1024 * 1024)
    app = create_app(run, engine=engine, variant="int8" if int8 else "fp32", max_batch=max_batch,
                     max_wait_ms=max_wait_ms, token=token,
                     limits=Limits(max_body_bytes=body, max_items=max_items,
                                   max_inflight_body_bytes=max(Limits.max_inflight_body_bytes, body)))
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log = logging.getLogger("headstart.serve")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    shown = f"[{host}]" if ":" in host else host

    def started(cap: int) -> None:
        auth = ", token required" if token else ""
        click.echo(f"Serving {run} at http://{shown}:{port} (docs: http://{shown}:{port}/docs; "
                   f"up to {cap} connections{auth}). Ctrl+C to stop.", err=True)

    run_server(app, host, port, max_connections=max_connections, on_started=started)
