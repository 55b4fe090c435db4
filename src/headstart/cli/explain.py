"""``headstart explain RUN ITEM... --out DIR``: why the model gives each item its class."""

from __future__ import annotations

import click

from ._common import RegistryHelpOption, log, out


def _method_help() -> str:
    from ..explain import DEFAULT_METHODS, EXPLAINERS

    names = ", ".join(f"{n} ({'/'.join(EXPLAINERS.get(n).modalities)})" for n in EXPLAINERS)
    defaults = ", ".join(f"{m}s: {n}" for m, n in DEFAULT_METHODS.items())
    return (f"Attribution method: {names}. Default: chosen by the faithfulness benchmark among those the model "
            f"supports ({defaults}); an explanation by a method not verified faithful there says so.")


@click.command("explain", epilog="""\b
Examples:
  headstart explain runs/photos cat.jpg dog.jpg --out why/               # occlusion overlays in why/images/
  headstart explain runs/photos cat.jpg --method integrated-gradients --out why/
  headstart explain runs/tickets "The app crashes when I log in" --out why/   # highlighted words in why/index.html
  headstart explain runs/tickets ticket.txt --method kernel-shap --target billing --out why/
""")
@click.argument("run")
@click.argument("items", nargs=-1)
@click.option("--method", "-m", default=None, cls=RegistryHelpOption, help_from=_method_help)
@click.option("--target", default=None, help="Explain this class instead of the predicted one.")
@click.option("--out", "-o", "out_dir", required=True, help="Folder to write: explanations.json, index.html and, for "
              "images, images/NNN.png overlays (new, empty, or an explanations folder with --overwrite).")
@click.option("--overwrite", is_flag=True, help="Replace an explanations folder already at --out.")
@click.option("--steps", type=click.IntRange(min=2), default=32, show_default=True,
              help="Integrated Gradients: steps on the path from the baseline.")
@click.option("--samples", type=click.IntRange(min=8), default=200, show_default=True,
              help="KernelSHAP: coalitions evaluated per item.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of KernelSHAP's sampling.")
def command(run: str, items: tuple[str, ...], method: str | None, target: str | None, out_dir: str, overwrite: bool,
            steps: int, samples: int, seed: int) -> None:
    """Explain each ITEM (an image file for an image model; a text, or a .txt file, for a text model)."""
    from ..explain import Settings
    from ..workflows.report import explain_to_folder

    folder = explain_to_folder(run, list(items), out_dir, method=method, target=target, overwrite=overwrite,
                               settings=Settings(steps=steps, samples=samples, seed=seed))
    import json

    record = json.loads((folder / "explanations.json").read_text(encoding="utf-8"))
    for item in record["items"]:
        top = ", ".join(f"{w['word']} ({w['score']:+.3g})" for w in sorted(item.get("words", []),
                                                                            key=lambda w: -w["score"])[:5])
        out.print(f"{item['item']}: {item['label']} ({100 * item['probability']:.0f}%)"
                  + (f"  top words: {top}" if top else f"  overlay: {folder / item['overlay']}" if "overlay" in item else ""))
    caveat = next((item["not_verified"] for item in record["items"] if item.get("not_verified")), "")
    if caveat:
        log(caveat)
    log(f"Wrote {folder}/ ({record['method']}): open {folder / 'index.html'}")
