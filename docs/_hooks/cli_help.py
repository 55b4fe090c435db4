"""MkDocs hook: replace ``<!-- cli-help: NAME -->`` with the live ``headstart NAME --help`` text.

The command pages show the options of the installed CLI, so they cannot drift from it. The CLI
modules import only click at module level (the work happens inside each command), so this needs
no model weights and no network.
"""

from __future__ import annotations

import re

MARKER = re.compile(r"<!--\s*cli-help:\s*([\w-]*)\s*-->")


def _help(name: str) -> str:
    from click.testing import CliRunner

    from headstart.cli.main import cli

    args = [name, "--help"] if name else ["--help"]
    result = CliRunner().invoke(cli, args, prog_name="headstart", terminal_width=100)
    if result.exit_code != 0:
        raise RuntimeError(f"`headstart {' '.join(args)}` failed while building the docs:\n{result.output}")
    return result.output.rstrip()


def on_page_markdown(markdown: str, **_: object) -> str:
    return MARKER.sub(lambda m: "```text\n$ headstart " + (m.group(1) + " " if m.group(1) else "")
                      + "--help\n" + _help(m.group(1)) + "\n```", markdown)
