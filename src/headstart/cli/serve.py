"""``headstart serve RUN``: a REST server (FastAPI + uvicorn) with request batching."""

from __future__ import annotations

import click


@click.command("serve", epilog="""\b
Examples:
  headstart serve runs/photos                              # http://127.0.0.1:8000/docs
  headstart serve runs/tickets --port 9000 --max-batch 64 --max-wait-ms 10
  curl -s localhost:8000/predict -H 'content-type: application/json' -d '{"texts": ["refund please"]}'
  curl -s localhost:8000/predict -F files=@cat.jpg -F files=@dog.jpg
""")
@click.argument("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@click.option("--engine", type=click.Choice(["auto", "onnx", "torch"]), default="auto", show_default=True,
              help="auto: the ONNX export when there is one, else torch.")
@click.option("--int8", is_flag=True, help="Serve the int8 ONNX model.")
@click.option("--max-batch", default=32, show_default=True, help="Items per forward pass (1 disables batching).")
@click.option("--max-wait-ms", default=5.0, show_default=True, help="How long a request may wait for others.")
@click.option("--max-items", default=64, show_default=True, help="Items per request.")
@click.option("--max-body-mb", default=16.0, show_default=True, help="Request body limit.")
def command(run: str, host: str, port: int, engine: str, int8: bool, max_batch: int, max_wait_ms: float,
            max_items: int, max_body_mb: float) -> None:
    """Serve RUN: POST /predict, GET /health, GET /metadata, docs at /docs."""
    import uvicorn

    from ..serve import Limits, create_app

    app = create_app(run, engine=engine, variant="int8" if int8 else "fp32", max_batch=max_batch,
                     max_wait_ms=max_wait_ms, limits=Limits(max_body_bytes=int(max_body_mb * 1024 * 1024),
                                                            max_items=max_items))
    uvicorn.run(app, host=host, port=port, log_level="warning")
