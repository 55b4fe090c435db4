"""``headstart`` command line: one module per command, each a thin call into the library."""

from __future__ import annotations

import os
import sys
import warnings

import click

from . import (app, backbones, check, demo, evaluate, explain, export, fit, gap, ladder, predict, rank, report, runs,
               serve, strategies, suggest)

EPILOG = """\b
Examples:
  headstart demo                                   # the whole pipeline on built-in MNIST digits
  headstart check photos/                          # validate a folder of images (one sub-folder per class)
  headstart rank photos/                           # which pre-trained backbone suits these images
  headstart fit tickets.csv --out runs/tickets     # linear probe on minilm-l6 (text) features
  headstart predict runs/tickets new.csv -o predictions.csv
  headstart export runs/tickets --quantize int8     # ONNX, checked against torch
  headstart serve runs/tickets                      # REST server on 127.0.0.1:8000
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}, epilog=EPILOG)
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="headstart")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Transfer learning for small labelled data sets: reuse a pre-trained network, measure what it buys."""
    ctx.obj = {"debug": debug}


for module in (check, rank, fit, gap, ladder, evaluate, suggest, predict, explain, report, runs, export, serve, backbones,
               strategies, demo, app):
    cli.add_command(module.command)


def main(argv: list[str] | None = None) -> None:
    # The CLI owns the terminal: rich progress bars are ours, so silence the hub/transformers ones.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from .._malloc import tune_malloc

    tune_malloc()  # large CPU tensors from the heap, not fresh mmap pages (see headstart._malloc)

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    with warnings.catch_warnings():
        _route_warnings(debug)
        _run(args, debug)


def _route_warnings(debug: bool) -> None:
    """headstart's own warnings become log lines; other libraries' (FutureWarning from torch,
    deprecations in transformers) stay out of the user's terminal unless --debug asks for them."""
    from ..errors import HeadstartWarning
    from ._common import log

    default_show = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if issubclass(category, HeadstartWarning) or (f"{os.sep}headstart{os.sep}" in str(filename)
                                                      and issubclass(category, UserWarning)):
            log(f"[warning] {message}")
        elif debug:
            default_show(message, category, filename, lineno, file, line)

    warnings.simplefilter("default")
    warnings.showwarning = show
    if not debug:  # torch.onnx logs a line per torchvision operator it cannot find (we never use them)
        import logging

        logging.getLogger("torch.onnx").setLevel(logging.ERROR)


def _run(args: list[str], debug: bool) -> None:
    from ..errors import HeadstartError

    try:
        cli.main(args=args, prog_name="headstart", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Interrupted; nothing was overwritten.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except HeadstartError as exc:
        if debug:
            raise
        click.secho(f"Error: {exc}", fg="red", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("Interrupted; nothing was overwritten.", err=True)
        sys.exit(130)
    except OSError as exc:  # the system refused: permissions, a full disk, a vanished file
        if debug:
            raise
        click.secho(f"Error: {os_error_message(exc)}", fg="red", err=True)
        sys.exit(2)
    except Exception as exc:  # a bug: still one line, with the way to the traceback
        if debug:
            raise
        click.secho(f"Error: unexpected {type(exc).__name__}: {exc}. This is a bug in headstart; rerun with "
                    "--debug for the traceback and report it.", fg="red", err=True)
        sys.exit(3)


def os_error_message(exc: OSError) -> str:
    """One line naming the path and the cause, with the fix for the usual ones."""
    import errno

    where = f" '{exc.filename}'" if exc.filename else ""
    fixes = {errno.ENOSPC: "the disk is full: free space (or point --out / $HEADSTART_CACHE elsewhere) and rerun; "
                           "earlier models were not touched.",
             errno.EACCES: "headstart has no permission for it: fix its permissions or use another path.",
             errno.EPERM: "headstart has no permission for it: fix its permissions or use another path.",
             errno.EROFS: "the file system is read-only: use a writable path.",
             errno.ENOENT: "check the path.", errno.EISDIR: "pass a file, not a folder.",
             errno.ENOTDIR: "a part of the path is a file, not a folder."}
    fix = fixes.get(exc.errno or -1, "check the path and rerun.")
    return f"{exc.strerror or exc}{where}. Fix: {fix}"


if __name__ == "__main__":
    main()
