"""`tfp demo-tasks`: write synthetic demo tasks to disk, to try every command without data of one's own."""
from __future__ import annotations

from pathlib import Path

import click

from tfp_mlflow.cli import console, main
from tfp_mlflow.errors import BadInputError


@main.command("demo-tasks")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--per-family", type=int, default=1, show_default=True, help="Tasks per domain family.")
@click.option("--families", default=None, help="Comma-separated families (default: all).")
@click.option("--images", type=int, default=60, show_default=True, help="Images per task.")
@click.option("--size", type=int, default=64, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True)
def demo_tasks_command(out_dir: str, per_family: int, families: str | None, images: int, size: int,
                       seed: int) -> None:
    """Write deterministic synthetic tasks (one folder of class folders each) under OUT_DIR."""
    from tfp_mlflow.demo.tasks import FAMILIES, demo_suite
    from tfp_mlflow.progress import Progress

    chosen = tuple(f.strip() for f in families.split(",")) if families else FAMILIES
    unknown = [f for f in chosen if f not in FAMILIES]
    if unknown:
        raise BadInputError(f"unknown family {unknown[0]!r}; choose from {', '.join(FAMILIES)}")
    if per_family < 1 or images < 4 or size < 32:
        raise BadInputError("need --per-family >= 1, --images >= 4 and --size >= 32")
    tasks = demo_suite(per_family, families=chosen, num_images=images, image_size=size, seed=seed)
    with Progress(console=console, transient=True) as bar:
        job = bar.add_task("drawing demo tasks", total=len(tasks))
        for task in tasks:
            task.write(Path(out_dir) / task.name)
            bar.advance(job)
    console.print(f"wrote {len(tasks)} tasks ({images} images of {size} px each) to {out_dir}: "
                  f"{', '.join(t.name for t in tasks)}")


def _suggestions(path: Path):
    """The recommendation's first suggestion per scenario, with why it was chosen."""
    from rich.table import Table

    from tfp_mlflow.cli.cloud import _why
    from tfp_mlflow.recommendation import Recommendation

    recommendation = Recommendation.read(path)
    table = Table(title="what was suggested, and why (#distance rank; mean gain over no transfer [95 %] on all other "
                        "targets and on those nearest yours)")
    for column in ("scenario", "ordered by", "first suggestion", "why"):
        table.add_column(column)
    for scenario, advice in recommendation.scenarios.items():
        if advice.items:
            item = advice.items[0]
            table.add_row(scenario, advice.ordered_by, f"{item.source}: {item.what}", _why(item.reasons))
    return table


def _outcome_table(result):
    """The final comparison: mean over seeds (spread), and each gain with its standard error."""
    from rich.table import Table

    first = result.results[0]
    seeds = len(first.get("seeds", [0]))
    outcome = Table(title=f"{result.target}: balanced accuracy on {first.get('held_out', '?')} test images no study "
                          f"saw, mean of {seeds} seed{'s' * (seeds > 1)}" + (" (± spread)" if seeds > 1 else ""),
                    caption="± after a gain: its standard error (seeds and test images); within noise: under twice it")
    for column in ("configuration", "what", "balanced acc.", "AUROC", "vs baseline"):
        outcome.add_column(column)
    for row in result.results:
        score = f"{row['balanced_accuracy']:.3f}" + (f" ± {row['sd']:.3f}" if row.get("sd") is not None else "")
        if row.get("at_chance"):
            score += " (chance level)"
        gain = "-" if row is first else (f"{row['gain']:+.3f} ± {row['gain_se']:.3f}"
                                         + (" (within noise)" if row["within_noise"] else ""))
        outcome.add_row(row["configuration"], row["what"], score,
                        "-" if row["auroc"] is None else f"{row['auroc']:.3f}", gain)
    return outcome


@main.command("demo")
@click.option("--home", default="tfp-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder of the demo's SQLite cloud, artifacts, study and tasks.")
@click.option("--quick", is_flag=True, help="The 2-minute version: 3 families, 1 source each, 2-trial studies.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--storage", type=click.Choice(["optuna.db", "mlflow"]), default="optuna.db", show_default=True,
              help="Where the demo's studies live: an Optuna database in --home, or the demo's cloud itself.")
def demo_command(home: str, quick: bool, seed: int, storage: str) -> None:
    """The whole loop on synthetic tasks: fingerprint, contribute, measure, recommend, tune, train."""
    from rich.table import Table

    from tfp_mlflow.demo.cloud import DEFAULT_PLAN, QUICK_PLAN
    from tfp_mlflow.demo.run import run_demo

    result = run_demo(home, plan=QUICK_PLAN if quick else DEFAULT_PLAN, seed=seed, console=console,
                      storage="mlflow" if storage == "mlflow" else None)
    closest = Table(title=f"closest tasks to {result.target} (a new {result.target_family} task), bkld-small-target")
    for column in ("rank", "source", "domain", "distance", "what it gave"):
        closest.add_column(column)
    for row in result.recommended:
        closest.add_row(str(row["rank"]), row["source"], row["domain"] or "", f"{row['distance']:.3f}",
                        ", ".join(row["gave"]) or "-")
    outcome = _outcome_table(result)
    console.print(closest, _suggestions(Path(home) / "recommendation.json"), outcome)
    console.print(f"done in {result.seconds:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in result.steps.items())})")
    where = ("the tfp-studies experiment" if result.study["storage"] == "mlflow"
             else f"optuna-dashboard {result.study['storage']}")
    console.print(f"browse it: mlflow ui --backend-store-uri {result.tracking_uri}   (studies: {where})")
