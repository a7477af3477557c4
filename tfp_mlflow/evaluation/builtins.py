"""The selectors ``tfp evaluate --builtin`` computes on the reference itself, by name: ``manual`` (the task
descriptions), ``track-record`` (learned from the reference's outcomes, strictly leave-one-target-out) and
``hybrid`` (a mixed cloud: some sources fingerprinted, the rest described). Registered selectors that need
fingerprints score on a cloud (``tfp evaluate --cloud``), whose tasks have them."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tfp_mlflow.errors import BadInputError
from tfp_mlflow.ranking import DEFAULT_MERGE_RULE
from tfp_mlflow.reference import Reference, read_distance_matrix
from tfp_mlflow.selectors.track_record import TRACK_RECORD

__all__ = ["BUILTINS", "BuiltinOptions", "builtin_matrices"]


@dataclass(frozen=True)
class BuiltinOptions:
    """What the builtins read besides the reference: the shots the learned rule validates with, whether it hides
    a target's image-sharing tasks too (``group_out``), and the hybrid's fingerprinted share, merge rule and
    subset seed."""

    top_k: int = 3
    group_out: bool = False
    fingerprinted: float = 0.5
    merge: str = DEFAULT_MERGE_RULE
    seed: int = 0


def _manual(ref: Reference, options: BuiltinOptions):
    return ref.manual_matrix()


def _track_record(ref: Reference, options: BuiltinOptions):
    from tfp_mlflow.evaluation.learned import track_record_matrices

    return track_record_matrices(ref, group_out=options.group_out, top_k=options.top_k)


def _hybrid(ref: Reference, options: BuiltinOptions):
    from tfp_mlflow.evaluation.hybrid import fingerprinted_subset, hybrid_distances

    manual = ref.manual_matrix()
    subset = fingerprinted_subset(list(manual.index), options.fingerprinted, np.random.default_rng(options.seed))
    shipped = read_distance_matrix(ref.distance_files()["bkld-small-target"])
    return hybrid_distances(shipped, manual, subset, options.merge)


#: Each builtin's distances on a reference: one matrix, or one per scenario (the learned rule's).
BUILTINS: dict[str, Callable[[Reference, BuiltinOptions], pd.DataFrame | dict[str, pd.DataFrame]]] = {
    "manual": _manual, TRACK_RECORD: _track_record, "hybrid": _hybrid}


def builtin_matrices(ref: Reference, names: Sequence[str], options: BuiltinOptions = BuiltinOptions()) -> dict:
    """The distances of each named builtin on ``ref`` (rows sources, columns targets, lower is better)."""
    unknown = [name for name in names if name not in BUILTINS]
    if unknown:
        raise BadInputError(f"--builtin {unknown[0]} needs fingerprints, which the reference tasks do not have; "
                            f"use {', '.join(BUILTINS)}, or --cloud to evaluate on your own cloud")
    return {name: BUILTINS[name](ref, options) for name in names}
