"""`tfp evaluate`: score selectors the way the reference did."""
from __future__ import annotations

import contextlib
from pathlib import Path as _Path

import click
from rich.table import Table

from tfp_mlflow.cli import console, emit_json, err_console, main
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.ranking import DEFAULT_MERGE_RULE, MERGE_RULES


@main.command("evaluate")
@click.option("--reference", "reference_dir", type=click.Path(file_okay=False),
              help="Folder laid out like the shipped reference (tasks, protocol, exp/, policies/; default: the "
                   "copy shipped with tfp-mlflow).")
@click.option("--selector", "selector_files", multiple=True, metavar="NAME=PATH.csv",
              help="A selector's distance matrix (rows sources, columns targets); repeatable. Without --selector "
                   "and --builtin: the reference's shipped bKLD(small,target) distances against manual.")
@click.option("--builtin", "builtins", multiple=True, metavar="SELECTOR",
              help="Add one of our selectors: manual (from the task descriptions), track-record (learned from the "
                   "measured outcomes, strictly leave-one-target-out), hybrid (a mixed cloud: --fingerprinted share "
                   "of sources ranked by the shipped bKLD distances, the rest by manual, merged); with --cloud any "
                   "registered selector or track-record (default there: manual and bkld-small-target).")
@click.option("--group-out", is_flag=True,
              help="For track-record: hide the outcomes of tasks that share images with a target together with the "
                   "target's own.")
@click.option("--matrix-out", "matrix_dir", type=click.Path(file_okay=False),
              help="For track-record: write its leave-one-target-out distances per scenario as CSV files "
                   "(track-record-<scenario>.csv: rows sources, columns targets, lower is better).")
@click.option("--fingerprinted", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="For --builtin hybrid: the share of sources that have fingerprints (a random subset, --seed).")
@click.option("--merge", default=DEFAULT_MERGE_RULE, show_default=True, type=click.Choice(MERGE_RULES),
              help="For --builtin hybrid: how the two rankings become one.")
@click.option("--seed", type=int, default=0, show_default=True, help="For --builtin hybrid: which subset.")
@click.option("--cloud", "on_cloud", is_flag=True,
              help="Leave-one-out on the cloud at --tracking-uri: each task with a baseline and measured transfers "
                   "as target, the others as sources.")
@click.option("--trusted", default=None, metavar="PATTERNS",
              help="With --cloud: read only these contributors' outcome tables (fnmatch patterns, e.g. "
                   "'alice,reference:*'), and all of them.")
@click.option("--top-k", type=int, default=3, show_default=True, help="Shots averaged by the meta metrics.")
@click.option("--bootstraps", type=int, default=1000, show_default=True, help="Bootstraps of the rank analysis.")
@click.option("--json", "json_out", is_flag=False, flag_value="-", default=None,
              help="Print the stable JSON (or write it to a file: --json=OUT.json).")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False), help="Write the figures to this folder.")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None,
              help="Also log the evaluation as an MLflow run (tfp-evaluations) on this server.")
def evaluate_command(reference_dir: str, selector_files: tuple[str, ...], builtins: tuple[str, ...], on_cloud: bool,
                     group_out: bool, matrix_dir: str | None, fingerprinted: float, merge: str, seed: int,
                     trusted: str | None, top_k: int,
                     bootstraps: int, json_out: str | None, plots_dir: str | None, tracking_uri: str | None) -> None:
    """Score task selectors against measured transfer outcomes (win rates, gain curves): the reference's,
    or, with --cloud, your own cloud's."""

    from tfp_mlflow.evaluation import evaluate
    from tfp_mlflow.evaluation.builtins import BuiltinOptions, builtin_matrices
    from tfp_mlflow.reference import Reference, bundled_reference, read_distance_matrix
    from tfp_mlflow.selectors.track_record import TRACK_RECORD

    if (group_out or matrix_dir) and TRACK_RECORD not in builtins:
        raise BadInputError("--group-out and --matrix-out apply to the learned selector: add --builtin track-record")
    if trusted and not on_cloud:
        raise BadInputError("--trusted picks whose outcomes a cloud evaluation reads: add --cloud")
    if on_cloud:
        _evaluate_cloud(builtins or ("manual", "bkld-small-target"), selector_files, reference_dir, top_k,
                        bootstraps, json_out, plots_dir, tracking_uri, group_out, matrix_dir, trusted)
        return
    reference_dir = reference_dir or str(bundled_reference())
    ref = Reference.load(reference_dir)
    matrices = {}
    for entry in selector_files:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise BadInputError(f"--selector takes NAME=PATH.csv, got {entry!r}")
        matrices[name] = read_distance_matrix(path)
    options = BuiltinOptions(top_k=top_k, group_out=group_out, fingerprinted=fingerprinted, merge=merge, seed=seed)
    with _status("computing " + ", ".join(builtins), json_out) if builtins else contextlib.nullcontext():
        matrices.update(builtin_matrices(ref, builtins, options))
    if matrix_dir:
        from tfp_mlflow.evaluation.learned import write_matrices

        write_matrices(matrices[TRACK_RECORD], matrix_dir)
    if not matrices:   # the default: the reference's shipped distances against manual (Fig. 4 and Table 4)
        matrices = {name: read_distance_matrix(path) for name, path in ref.distance_files().items()}
        matrices["manual"] = ref.manual_matrix()
    if len(matrices) == 1:
        err_console.print(f"note: win rates compare selectors; with {next(iter(matrices))} alone every win rate is "
                          f"100 % (add --selector NAME=PATH.csv or --builtin manual)")
    with _status("scoring selectors on the validation targets", json_out):
        result = evaluate(ref, matrices, top_k_shots=top_k, bootstraps=bootstraps)
    payload = result.to_json()
    if plots_dir:
        result.write_plots(plots_dir)
    if tracking_uri:
        from tfp_mlflow.cloud import Cloud

        payload["run_id"] = result.log(Cloud(tracking_uri), reference=str(_Path(reference_dir).resolve()))
    _emit(payload, json_out)


def _status(what: str, json_out: str | None):
    """A spinner, unless stdout carries the JSON."""
    return console.status(what, spinner="dots") if json_out != "-" else contextlib.nullcontext()


def _emit(payload: dict, json_out: str | None, heading: str | None = None) -> None:
    """The JSON to stdout (``--json``) or a file, and the tables unless stdout holds the JSON."""
    if emit_json(payload, json_out, sort_keys=True):
        return
    if heading:
        console.print(heading)
    _print_evaluation(payload)


def _evaluate_cloud(selectors, selector_files, reference_dir, top_k, bootstraps, json_out, plots_dir,
                    tracking_uri, group_out=False, matrix_dir=None, trusted=None) -> None:
    from tfp_mlflow.cloud import Cloud
    from tfp_mlflow.evaluation.cloud import evaluate_cloud

    if selector_files or reference_dir:
        raise BadInputError("--cloud computes its selectors' distances from the cloud; drop --selector/--reference")
    cloud = Cloud(tracking_uri)
    with _status(f"leave-one-out on {cloud.uri}", json_out):
        result = evaluate_cloud(cloud, list(dict.fromkeys(selectors)), top_k_shots=top_k, bootstraps=bootstraps,
                                group_out=group_out, matrix_dir=matrix_dir, trusted=trusted)
    payload = {**result.to_json(), "cloud": cloud.uri,
               "targets": sorted(result.scores["target"].unique().tolist()) if len(result.scores) else []}
    if plots_dir:
        result.write_plots(plots_dir)
    payload["run_id"] = result.log(cloud, reference=f"leave-one-out on {cloud.uri}")
    _emit(payload, json_out, f"{len(payload['targets'])} targets of {cloud.uri}, each ranked against the tasks "
                             f"whose transfer to it was measured")


def _print_evaluation(payload: dict) -> None:
    scenarios = payload["scenarios"]
    gains = Table(title="targets improved in balanced accuracy by the best of the top k (%, Fig. 4 top)")
    gains.add_column("selector")
    gains.add_column("scenario")
    for k in range(1, 6):
        gains.add_column(f"k={k}", justify="right")
    for selector, curves in payload["gain_curve"].items():
        for scenario in scenarios:
            if scenario in curves:
                gains.add_row(selector, scenario, *(f"{v:.2f}" for v in curves[scenario]))
    console.print(gains)
    relative = payload.get("relative_improvement_over_manual") or {}
    if relative:
        table = Table(title="how much larger the mean AUROC improvement over the baseline is than manual's (%, "
                            "averaged over targets, repetitions and k = 1..5; Fig. 4 bottom)")
        table.add_column("selector")
        for scenario in scenarios:
            table.add_column(scenario, justify="right")
        for selector, values in relative.items():
            table.add_row(selector, *("-" if values.get(s) is None else f"{values[s]:+.1f}" for s in scenarios))
        console.print(table)
    wins = Table(title=f"win rates (%, {payload['win_rate_setups_per_scenario']} setups per scenario, "
                       f"top-{payload['top_k']} averaged; ties count for every tied selector)")
    wins.add_column("selector")
    for scenario in [*scenarios, "mean"]:
        wins.add_column(scenario, justify="right")
    for selector, rates in payload["win_rates"].items():
        wins.add_row(selector, *("-" if rates.get(s) is None else f"{rates[s]:.2f}" for s in [*scenarios, "mean"]))
    console.print(wins)
    if payload.get("run_id"):
        console.print(f"logged as run {payload['run_id']} in experiment tfp-evaluations")


if __name__ == "__main__":  # pragma: no cover
    main()
