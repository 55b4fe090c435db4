"""``headstart rank DATA``: which pre-trained backbone suits this data, in seconds, before training."""

from __future__ import annotations

import click

from ._common import RegistryHelpOption, data_options, log, out


def ranker_names() -> list[str]:
    from ..rank import RANKERS

    return RANKERS.names()


@click.command("rank", epilog="""\b
Examples:
  headstart rank photos/                                     # every image backbone available here
  headstart rank tickets.csv --backbones minilm-l6,minilm-l3-onnx
  headstart rank builtin:mnist:50 --scores logme,knn,leep --json ranking.json
  headstart rank tickets.csv --confirm 2                     # then fine-tune the top 2 briefly to check
  headstart rank big_folder/ --max-examples 0                # score every example (default: 1000)
""")
@click.argument("data")
@click.option("--backbones", default=None, help="Comma-separated names (default: every compatible one available).")
@click.option("--scores", default="logme,hscore-shrink,knn,leep,nce", show_default=True, cls=RegistryHelpOption,
              help_from=lambda: "Comma-separated, from: " + ", ".join(ranker_names()) + "; the first one orders the table.")
@click.option("--confirm", "confirm", type=int, default=0,
              help="Fine-tune the top K briefly (successive halving) and report whether the ranking held.")
@click.option("--max-examples", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Score a stratified subset of at most this many examples (0: all of them).")
@click.option("--json", "json_path", default=None, help="Also write the ranking as JSON.")
@click.option("--engine", type=click.Choice(["auto", "torch", "onnx"]), default="auto", show_default=True,
              help="What runs the backbones: auto uses ONNX Runtime for image backbones on CPU (exported once, cached).")
@click.option("--device", default=None)
@click.option("--cache-dir", default=None)
@data_options
def command(data: str, backbones: str | None, scores: str, confirm: int, max_examples: int, json_path: str | None,
            engine: str, device: str | None, cache_dir: str | None, text_column: str | None, label_column: str | None,
            encoding: str | None) -> None:
    """Score candidate backbones by transferability (LogME and friends) on DATA's own labels."""
    from rich.table import Table

    from .._io import write_json_atomic
    from ..data import load_data
    from ..workflows.rank import rank_backbones

    dataset = load_data(data, text_column=text_column, label_column=label_column, encoding=encoding)
    result = rank_backbones(dataset, backbones.split(",") if backbones else None, tuple(scores.split(",")),
                            cache_dir=cache_dir, device=device, max_examples=max_examples or None, engine=engine,
                            log=log)
    names = scores.split(",")
    from rich.table import Column

    # Backbone names never shrink: three EfficientNets that differ only in their last digit must stay apart.
    table = Table("rank", Column("backbone", no_wrap=True, min_width=max(len(n) for n in result["order"])),
                  *names, "parameters", "seconds",
                  title=f"{result['n']} examples" + (f" (of {result['n_total']})" if result["n_total"] > result["n"] else "")
                  + f", {result['classes']} classes; higher is better")
    rows = {r["backbone"]: r for r in result["rows"]}
    for i, name in enumerate(result["order"], 1):
        r = rows[name]
        table.add_row(str(i), name, *[("-" if r["scores"][s] is None else f"{r['scores'][s]:.4g}") for s in names],
                      f"{r['params'] / 1e6:.1f} M", f"{r['seconds']:.1f}")
    out.print(table)
    if result["agreement"]:
        out.print("Rank agreement (Kendall tau): " + ", ".join(f"{k} {v:+.2f}" for k, v in result["agreement"].items()))
    out.print(f"[bold]{result['recommendation']}[/bold]")
    if confirm:
        from ..workflows.rank import confirm_ranking

        check = confirm_ranking(dataset, result["order"], confirm, cache_dir=cache_dir, device=device, log=log)
        result["confirmation"] = check
        for r in check["rounds"]:
            out.print(f"  round with {r['epochs']} epoch(s): "
                      + ", ".join(f"{n} {100 * a:.1f}%" for n, a in sorted(r["accuracy"].items(), key=lambda x: -x[1])))
        if check["verdict"] == "tie":
            out.print(f"[bold]Confirmation: a tie[/bold] between {', '.join(check['tied'])} after fine-tuning: "
                      "this data cannot tell them apart; take the cheaper one.")
        else:
            verdict = "held" if check["verdict"] == "held" else "did NOT hold"
            out.print(f"[bold]Confirmation: the top choice {verdict}[/bold]; fine-tuned order: "
                      + " > ".join(check["confirmed_order"]))
    if json_path:
        write_json_atomic(json_path, result)
