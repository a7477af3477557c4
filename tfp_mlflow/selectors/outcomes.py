"""Measured transfer outcomes in long form (:class:`Outcomes`): what ``track-record`` learns from, read from the
reference, a cloud's knowledge, or records. Torch-free."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tfp_mlflow.errors import BadInputError

__all__ = ["Outcomes"]

_COLUMNS = ["scenario", "metric", "r", "s", "t", "p", "baseline", "n"]


@dataclass(frozen=True)
class Outcomes:
    """Measured transfer outcomes in long form.

    Attributes
    ----------
    table : DataFrame
        Columns ``scenario, metric, r, s, t, p, baseline, n``: the target ``t``'s performance ``p`` in ``metric``
        after transfer from source ``s`` in ``scenario`` (repetition ``r``), the target's no-transfer
        ``baseline`` of that repetition (NaN where none was measured) and the held-out images ``n`` both were
        measured on (NaN where unknown: then no gain can be called within noise); optionally ``w``, the account
        that wrote the outcome (a record then says from how many accounts its evidence comes).
    groups : dict of str to frozenset of str
        Tasks that share images with a task (itself included), for group-out validation.
    """

    table: pd.DataFrame
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: Iterable[Mapping], groups: Mapping[str, Iterable[str]] | None = None) -> Outcomes:
        """From dicts with the keys of :attr:`table` (``baseline`` and ``n`` optional)."""
        records = list(records)
        table = pd.DataFrame(records, columns=_COLUMNS + (["w"] if records and "w" in records[0] else []))
        return cls._checked(table, groups)

    @classmethod
    def from_rows(cls, rows: Sequence[tuple], groups: Mapping[str, Iterable[str]] | None = None, *,
                  with_writers: bool = False) -> Outcomes:
        """From tuples in the order of :attr:`table`'s columns (and the writer last, ``with_writers``)."""
        return cls._checked(pd.DataFrame.from_records(list(rows), columns=_COLUMNS + (["w"] if with_writers else [])),
                            groups)

    @classmethod
    def _checked(cls, table: pd.DataFrame, groups: Mapping[str, Iterable[str]] | None) -> Outcomes:
        if len(table):
            table["p"] = table["p"].astype(float)
            table["baseline"] = pd.to_numeric(table["baseline"], errors="coerce")
            table["n"] = pd.to_numeric(table["n"], errors="coerce")
            table["r"] = table["r"].fillna(0).astype(int)
        bad = table[~np.isfinite(table["p"].to_numpy(dtype=float))] if len(table) else table
        if len(bad):
            raise BadInputError(f"outcome of {bad.iloc[0]['s']!r} on {bad.iloc[0]['t']!r} is not a number")
        return cls(table=table.reset_index(drop=True), groups=_group_map(groups or {}))

    @classmethod
    def from_reference(cls, ref: Any, *, development: bool = True) -> Outcomes:
        """The reference's outcomes: validation targets, and (``development``) the 28 development targets' too."""
        frames = []
        for (scenario, metric), table in ref.outcomes.items():
            parts = [table]
            extra = ref.development_outcomes(scenario, metric) if development else None
            if extra is not None:
                parts.append(extra)
            frame = pd.concat(parts, ignore_index=True)
            frame = frame.groupby(["r", "s", "t"], as_index=False)["p"].mean()
            frame.insert(0, "metric", metric)
            frame.insert(0, "scenario", scenario)
            frames.append(frame)
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=_COLUMNS[:-1])
        baselines = {}
        for (metric, target, repetition) in table[["metric", "t", "r"]].drop_duplicates().itertuples(index=False):
            value = (ref.baseline(target, metric, repetition) if target in ref.validation else
                     ref.baseline_or_none(target, metric, repetition))
            baselines[(metric, target, repetition)] = np.nan if value is None else value
        table["baseline"] = [baselines[key] for key in zip(table["metric"], table["t"], table["r"])]
        table["n"] = np.nan   # the study does not publish its held-out sizes
        groups: dict[str, set[str]] = {}
        for members in ref.groups.values():
            for task in members:
                groups.setdefault(task, set()).update(members)
        return cls(table=table[_COLUMNS].reset_index(drop=True), groups=_group_map(groups))

    @property
    def scenarios(self) -> list[str]:
        return sorted(self.table["scenario"].unique().tolist())

    def group(self, task: str) -> frozenset[str]:
        return self.groups.get(task, frozenset({task}))

    def subsample(self, fraction: float, rng: np.random.Generator) -> Outcomes:
        """A random share of the measured (source, target) pairs of each scenario, all their cases kept together."""
        pairs = self.table[["scenario", "s", "t"]].drop_duplicates()
        keep = pairs.sample(frac=fraction, random_state=int(rng.integers(2**31)))
        table = self.table.merge(keep, on=["scenario", "s", "t"])
        return Outcomes(table=table[_COLUMNS], groups=self.groups)


def _group_map(groups: Mapping[str, Iterable[str]]) -> dict[str, frozenset[str]]:
    return {task: frozenset({task, *members}) for task, members in groups.items()}
