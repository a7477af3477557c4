"""The ``track-record`` selector scored as the evaluation scores any selector: strictly leave-one-target-out.

:func:`track_record_matrices` gives, per scenario, a distance matrix in the reference's layout (rows sources,
columns targets under their shrunk names, lower is better) whose column ``t`` was computed without any outcome or
baseline of ``t`` (:mod:`tfp_mlflow.selectors.track_record`). :func:`write_matrices` writes them as CSV files a
later ``tfp evaluate --selector NAME=CSV`` (or anyone's notebook) reads.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from tfp_mlflow.reference import Reference, read_distance_matrix
from tfp_mlflow.scenarios import scenario_names
from tfp_mlflow.selectors import fit_selector
from tfp_mlflow.selectors.track_record import NEIGHBOURHOODS, TRACK_RECORD, Outcomes

__all__ = ["track_record_matrices", "write_matrices", "distance_for_track_record"]


def distance_for_track_record(ref: Reference) -> pd.DataFrame:
    """The distance the learned rules combine with on the reference: the shipped bKLD(small,target) distances
    (the reference's tasks have no fingerprints of ours), else the keyword distances."""
    shipped = ref.distance_files().get("bkld-small-target")
    return read_distance_matrix(shipped) if shipped else ref.manual_matrix()


def track_record_matrices(ref: Reference, distances: pd.DataFrame | None = None, *,
                          outcomes: Outcomes | None = None, targets: Sequence[str] | None = None,
                          group_out: bool = False, top_k: int = 3,
                          neighbourhoods: Sequence[int | None] = NEIGHBOURHOODS) -> dict[str, pd.DataFrame]:
    """Leave-one-target-out distance matrices of ``track-record``, one per scenario.

    Parameters
    ----------
    ref : Reference
        Its tasks are the sources; its validation targets the columns (unless ``targets``).
    distances : DataFrame, optional
        The distance the rules may combine with (default: :func:`distance_for_track_record`).
    outcomes : Outcomes, optional
        What the selector learns from (default: every outcome of ``ref``, development targets included).
    group_out : bool
        Hide the outcomes of tasks sharing images with a target together with the target's own.
    neighbourhoods : sequence of int or None
        The neighbourhood sizes the rules may read (``(None,)``: the global record only, the rule before 0.2).
    """
    distances = distance_for_track_record(ref) if distances is None else distances
    outcomes = Outcomes.from_reference(ref) if outcomes is None else outcomes
    model = fit_selector(TRACK_RECORD, outcomes, list(ref.tasks), top_k=top_k, group_out=group_out,
                         neighbourhoods=neighbourhoods)
    targets = list(ref.validation if targets is None else targets)
    return {scenario: model.matrix(scenario, distances, targets, ref.shrink_map) for scenario in scenario_names()}


def write_matrices(matrices: dict[str, pd.DataFrame], folder: str | os.PathLike,
                   name: str = TRACK_RECORD) -> list[Path]:
    """``<folder>/<name>-<scenario>.csv`` per scenario (rows sources, columns targets, lower is better)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for scenario, matrix in matrices.items():
        path = folder / f"{name}-{scenario}.csv"
        matrix.to_csv(path)
        paths.append(path)
    return paths
