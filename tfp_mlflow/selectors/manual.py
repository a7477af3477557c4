"""Manual (semantic) task selection: keyword intersection over union (docs/method.md §4)."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tfp_mlflow.keywords import canonical
from tfp_mlflow.selectors._base import PreparedSources, Selector
from tfp_mlflow.selectors._registry import register_selector
from tfp_mlflow.task import Task

__all__ = ["ManualSelector"]


class ManualSelector(Selector):
    """``1 - |K_S ∩ K_T| / |K_S ∪ K_T|`` on keyword sets; two empty sets are at distance 1 (nothing in common).
    Keywords are compared in their :func:`~tfp_mlflow.keywords.canonical` spelling (``x-ray`` is ``x_ray``).

    Needs no fingerprint, so tasks known only by description (the imported reference) can be ranked.

    Parameters
    ----------
    tiebreak : bool
        Subtract the reference's source shifts, as its manual baseline did: ``0.001 * rank(size)``,
        ``1e-5 * rank(intrinsic dimension)`` (average ranks among the sources; unknown dimension: no shift) and
        ``1e-7 * position`` in the source list. The size shift can outweigh small keyword differences (71 sources:
        up to 0.071), which is part of that baseline's behaviour. Without it, many sources tie and the ranking's
        own tie rule orders them.
    """

    needs_fingerprint = False

    def __init__(self, tiebreak: bool = True) -> None:
        self.tiebreak = tiebreak

    def _prepare(self, sources: Iterator[Task], count: int, prepared: PreparedSources) -> None:
        keyword_sets = [{canonical(k) for k in task.keywords} for task in sources]
        vocabulary = sorted(set().union(*keyword_sets))
        column = {word: j for j, word in enumerate(vocabulary)}
        membership = np.zeros((count, len(vocabulary)), dtype=np.float64)
        for i, keywords in enumerate(keyword_sets):
            membership[i, [column[w] for w in keywords]] = 1.0
        prepared.arrays.update(membership=membership, sizes=membership.sum(axis=1), vocabulary=column)
        shift = np.zeros(count)
        if self.tiebreak:
            from scipy.stats import rankdata  # 0.7 s to import: not on `import tfp_mlflow`, only here

            shift = 1e-3 * rankdata(prepared.num_images) + 1e-7 * np.arange(count)
            known = np.isfinite(prepared.intrinsic_dims)
            shift[known] += 1e-5 * rankdata(prepared.intrinsic_dims[known])
        prepared.arrays["shift"] = shift

    def _distances(self, target: Task, prepared: PreparedSources) -> np.ndarray:
        column = prepared.arrays["vocabulary"]
        keywords = {canonical(k) for k in target.keywords}
        known = [column[w] for w in keywords if w in column]
        intersection = prepared.arrays["membership"][:, known].sum(axis=1)
        union = prepared.arrays["sizes"] + len(keywords) - intersection
        iou = np.divide(intersection, union, out=np.zeros_like(union), where=union > 0)
        return 1.0 - iou - prepared.arrays["shift"]


@register_selector("manual", "keyword intersection over union with the reference's size tie-breakers (no fingerprint "
                             "needed)")
def manual() -> ManualSelector:
    return ManualSelector()
