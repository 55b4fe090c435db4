"""``headstart runs [DIR...]``: saved model folders side by side."""

from __future__ import annotations

import click

from ._common import out


@click.command("runs", epilog="""\b
Examples:
  headstart runs                      # every model folder in runs/
  headstart runs runs/ old_runs/ runs/photos
  headstart runs --json > runs.json
""")
@click.argument("dirs", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of a table.")
def command(dirs: tuple[str, ...], as_json: bool) -> None:
    """List model folders (in DIR, default runs/): data, backbone, strategy, accuracy, gain over the baseline, time."""
    import json

    from rich.table import Table

    from ..workflows.tracking import list_runs

    rows = list_runs(list(dirs) or ["runs"])
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    if not rows:
        out.print(f"No model folders in {', '.join(dirs) or 'runs'}.")
        return
    table = Table("folder", "created", "data", "backbone", "strategy", "test accuracy", "gain", "seconds")
    for r in rows:
        if "error" in r:
            table.add_row(r["folder"], "", f"[red]{r['error'][:60]}[/]", "", "", "", "", "")
            continue
        acc = "" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}%"
        if acc and r.get("n_test"):  # 60% of 20 test items and 60% of 600 are not the same news
            acc += f" of {r['n_test']}"
        gain = "" if r["gain"] is None else f"{100 * r['gain']:+.1f}"
        if r["gain_ci95"]:
            gain += f" ({100 * r['gain_ci95'][0]:+.1f}, {100 * r['gain_ci95'][1]:+.1f})"
        table.add_row(r["folder"], str(r["created"]).replace("T", " ")[:16], f"{r['data']} ({r['n']})", r["backbone"],
                      r["strategy"], acc, gain, f"{r['seconds']:.0f}")
    out.print(table)
