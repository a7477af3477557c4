"""What a source's measured gains say, as a person should read them (:class:`Evidence`): the mean gain over the
targets' baselines with its 95 % interval, and a verdict earned by effect size against its own uncertainty, never
by a count of cases (docs/method.md §8). Torch-free."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Evidence", "MIN_EFFECT", "STRONG", "MIN_GAINS", "mean_interval", "rounded"]


#: A mean gain (balanced accuracy) under this is no practical effect, however sure: one point.
MIN_EFFECT = 0.01
#: A gain is *strong* when its mean is at least this many standard errors (and at least :data:`MIN_EFFECT`).
STRONG = 4.0
#: Targets with a measured gain below which no interval is given (the effect is ``thin``).
MIN_GAINS = 3


@dataclass(frozen=True)
class Evidence:
    """A source's measured record in one scenario, on the targets a query may read (never the query's own).

    ``improved`` of ``tried`` targets gained in balanced accuracy over their baseline (mean over repetitions);
    ``median_gain`` and ``mean_gain`` summarise those gains, ``interval`` is the 95 % t-interval of the mean over
    the targets (``None`` under :data:`MIN_GAINS` targets); ``beyond_noise`` of the ``sized`` targets whose held-out
    size is known gained by more than twice the standard error of a difference on their split, ``within_noise``
    moved by less (:mod:`tfp_mlflow.noise`); ``outcomes`` counts every measured case behind them. ``among`` names
    how many targets were read when the record was restricted to the query's nearest (``None``: all others).
    """

    tried: int
    improved: int
    median_gain: float | None
    outcomes: int
    record: float
    within_noise: int = 0
    mean_gain: float | None = None
    interval: tuple[float, float] | None = None
    standard_error: float | None = None
    beyond_noise: int = 0
    sized: int = 0
    among: int | None = None
    #: Distinct accounts whose outcomes back the record (0 where the writers are not known).
    accounts: int = 0

    @property
    def strength(self) -> str:
        """What the gains say, by effect size against their own uncertainty (never by a count):

        ``none`` (never tried), ``thin`` (under :data:`MIN_GAINS` targets with a gain), ``no measurable effect``
        (the interval holds 0, or the mean is under :data:`MIN_EFFECT`), ``loss`` (the interval is below 0),
        ``gain`` (above 0) and ``strong`` (above 0 and the mean at least :data:`STRONG` standard errors).
        """
        if self.tried == 0:
            return "none"
        if self.interval is None or self.mean_gain is None:
            return "thin"
        low, high = self.interval
        if high < 0:
            return "loss"
        if low <= 0 or self.mean_gain < MIN_EFFECT:
            return "no measurable effect"
        return "strong" if self.mean_gain >= STRONG * (self.standard_error or math.inf) else "gain"

    @property
    def measurable_gain(self) -> bool:
        return self.strength in ("gain", "strong")

    def to_json(self) -> dict:
        return {"tried": self.tried, "improved": self.improved, "median_gain": rounded(self.median_gain),
                "mean_gain": rounded(self.mean_gain),
                "interval": None if self.interval is None else [rounded(v) for v in self.interval],
                "outcomes": self.outcomes, "record": rounded(self.record), "evidence": self.strength,
                "within_noise": self.within_noise, "beyond_noise": self.beyond_noise, "sized": self.sized,
                "among": self.among, "accounts": self.accounts}


def mean_interval(gains: np.ndarray) -> tuple[float | None, float | None, tuple[float, float] | None]:
    """Mean gain, its standard error and 95 % t-interval over targets (no interval under :data:`MIN_GAINS`)."""
    if not len(gains):
        return None, None, None
    mean = float(gains.mean())
    if len(gains) < MIN_GAINS:
        return mean, None, None
    error = float(gains.std(ddof=1) / math.sqrt(len(gains)))
    half = _T975.get(len(gains) - 1, 1.96 + 2.5 / (len(gains) - 1)) * error
    return mean, error, (mean - half, mean + half)


#: Two-sided 95 % quantiles of Student's t by degrees of freedom (others: 1.96 + 2.5 / df, within 0.02).


#: Two-sided 95 % quantiles of Student's t by degrees of freedom (others: 1.96 + 2.5 / df, within 0.02).
_T975 = {2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228, 12: 2.179,
         15: 2.131, 20: 2.086}


def rounded(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)
