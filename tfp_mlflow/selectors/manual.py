"""Manual (semantic) task selection: keyword intersection over union (method.md §4)."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from tfp_mlflow.selectors._base import PreparedSources, Selector
from tfp_mlflow.selectors._registry import register_selector
from tfp_mlflow.task import Task

__all__ = ["KeywordIoU"]


class KeywordIoU(Selector):
    """``1 - |K_S ∩ K_T| / |K_S ∪ K_T|`` on keyword sets; two empty sets are at distance 1 (nothing in common).

    Needs no fingerprint, so tasks known only by description (the imported reference) can be ranked. Many
    sources tie; the ranking's tie rule (larger source, larger intrinsic dimension, then name) orders them.
    """

    needs_fingerprint = False

    def _prepare(self, sources: Iterator[Task], count: int, prepared: PreparedSources) -> None:
        keyword_sets = [set(task.keywords) for task in sources]
        vocabulary = sorted(set().union(*keyword_sets))
        column = {word: j for j, word in enumerate(vocabulary)}
        membership = np.zeros((count, len(vocabulary)), dtype=np.float64)
        for i, keywords in enumerate(keyword_sets):
            membership[i, [column[w] for w in keywords]] = 1.0
        prepared.arrays.update(membership=membership, sizes=membership.sum(axis=1), vocabulary=column)

    def _distances(self, target: Task, prepared: PreparedSources) -> np.ndarray:
        column = prepared.arrays["vocabulary"]
        known = [column[w] for w in target.keywords if w in column]
        intersection = prepared.arrays["membership"][:, known].sum(axis=1)
        union = prepared.arrays["sizes"] + len(target.keywords) - intersection
        iou = np.divide(intersection, union, out=np.zeros_like(union), where=union > 0)
        return 1.0 - iou


@register_selector("manual", "keyword intersection over union (no fingerprint needed)")
def manual() -> KeywordIoU:
    return KeywordIoU()
