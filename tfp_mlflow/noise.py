"""How much a measured score can be trusted: chance level and the noise of a score on a held-out split.

A balanced accuracy measured on ``n`` held-out images has a standard error of about ``sqrt(a (1 - a) / n)`` (the
mean of per-class recalls, each on about ``n / C`` images), so on 18 images one image moves it by 0.06 and a
difference of 0.1 is within noise. :func:`at_chance` says whether a score is indistinguishable from guessing
(``1 / C`` for balanced accuracy, 0.5 for AUROC) and :func:`within_noise` whether a gain over a baseline measured
on the same split is smaller than twice its standard error. Both answer ``None`` when the held-out size is
unknown (the published study's rows do not carry it). docs/method.md §8 says where recommendations use them.
"""
from __future__ import annotations

import math

__all__ = ["Z", "chance_level", "standard_error", "at_chance", "within_noise", "noise_reason"]

#: Standard errors a score must clear: about 95 % two-sided.
Z = 2.0


def chance_level(metric: str, num_classes: int | None) -> float | None:
    """What guessing scores: ``1 / C`` balanced accuracy, 0.5 AUROC (``None`` for an unknown class count)."""
    if metric == "auroc":
        return 0.5
    return 1.0 / num_classes if num_classes and num_classes >= 2 else None


def standard_error(score: float, held_out: int | None, metric: str = "balanced_accuracy") -> float | None:
    """Standard error of ``score`` measured on ``held_out`` images (``None`` when the size is unknown).

    Balanced accuracy: ``sqrt(a (1 - a) / n)``, floored at one image's share of the chance-level spread so a
    perfect score on few images is not noise-free. AUROC: the Hanley-McNeil (1982) error of a balanced binary
    split, floored at one image's share.
    """
    if not held_out or held_out < 1:
        return None
    if metric == "auroc":
        q1, q2 = score / (2 - score), 2 * score * score / (1 + score)
        half = held_out / 2
        variance = (score * (1 - score) + (half - 1) * (q1 - score * score) + (half - 1) * (q2 - score * score))
        return max(math.sqrt(max(variance, 0.0)) / half, 1.0 / held_out)
    return math.sqrt(max(score * (1 - score), 1.0 / held_out) / held_out)


def at_chance(score: float | None, metric: str, num_classes: int | None, held_out: int | None) -> bool | None:
    """Whether ``score`` is within :data:`Z` standard errors (at chance) of guessing; ``None`` when unknown."""
    chance = chance_level(metric, num_classes)
    if score is None or chance is None:
        return None
    if score <= chance:
        return True
    spread = standard_error(chance, held_out, metric)
    return None if spread is None else bool(score - chance < Z * spread)


def within_noise(score: float | None, baseline: float | None, held_out: int | None,
                 metric: str = "balanced_accuracy") -> bool | None:
    """Whether ``score - baseline`` (both on the same ``held_out`` images) is under :data:`Z` standard errors of
    the difference; ``None`` when either score or the size is unknown."""
    if score is None or baseline is None:
        return None
    first, second = standard_error(score, held_out, metric), standard_error(baseline, held_out, metric)
    if first is None or second is None:
        return None
    return bool(abs(score - baseline) < Z * math.hypot(first, second))


def noise_reason(score: float | None, metric: str, num_classes: int | None, held_out: int | None) -> dict:
    """What a reader needs to judge one score: its held-out size, standard error, chance level and verdict."""
    error = None if score is None else standard_error(score, held_out, metric)
    chance = chance_level(metric, num_classes)
    return {"held_out": held_out, "standard_error": None if error is None else round(error, 4),
            "chance_level": None if chance is None else round(chance, 4),
            "at_chance": at_chance(score, metric, num_classes, held_out)}
