"""Where the published study's tasks come from: each reference task's public dataset, by name, with where it is
published, so a pretraining or co-training suggestion from the study names data a user can download.

The table (``data/reference/datasets.csv``) maps each of the 71 reference tasks to the study's dataset id and the
dataset's public name, publication and address; an address is left empty where it is not known for certain. A
user's own tasks are never looked up here: their data is wherever their contributor said (``--data-uri``).
"""
from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

__all__ = ["PublicDataset", "public_dataset", "public_datasets"]

_TABLE = Path(__file__).parent / "data" / "reference" / "datasets.csv"


@dataclass(frozen=True)
class PublicDataset:
    """A public dataset behind a reference task: the study's ``id``, its public ``name``, ``published`` (first
    author, venue, year) and ``url`` (empty when not recorded)."""

    id: str
    name: str
    published: str = ""
    url: str = ""

    def where(self) -> str:
        """Where to get it, in words: the address, else the publication, else a plain statement."""
        return self.url or self.published or "its address was not recorded"

    def to_json(self) -> dict[str, str]:
        return asdict(self)


@lru_cache(maxsize=1)
def public_datasets() -> dict[str, PublicDataset]:
    """Every reference task's public dataset, by task name."""
    with _TABLE.open(newline="", encoding="utf-8") as handle:
        return {row["task"]: PublicDataset(row["dataset"], row["name"], row["published"], row["url"])
                for row in csv.DictReader(handle)}


def public_dataset(task: str) -> PublicDataset | None:
    """The public dataset of a reference task (``None`` for any other name)."""
    return public_datasets().get(task)
