"""The poisoning guard: which contributors a recommendation trusts, and which sources and results look fabricated.

A shared cloud takes contributions from parties it cannot check. The guard does three things (documented with its
limits in docs/server.md, "The poisoning guard"):

* **trust** — ``--trusted`` patterns (``fnmatch``, e.g. ``alice``, ``reference:*``) restrict the sources and the
  knowledge a recommendation may use to those contributors. Behind ``tfp-basic-auth`` the contributor is the
  authenticated MLflow user (the server refuses any other name), so trust follows accounts;
* **implausible fingerprints** — histograms identical to another contributor's task (a replay under a new name),
  and summary statistics (Miller-Madow entropy, share of draws in the clipping bins) far outside the spread of the
  other contributors' tasks (the trusted ones when trust is given), each contributor weighing once, so an account
  that contributes many tasks cannot make the honest ones look like the outliers. Statistics cannot catch a
  fingerprint engineered to look ordinary: that is what ``--trusted`` is for;
* **contradicting knowledge** — a result claiming a gain over the task's own baseline larger than any of the
  117,060 published transfer outcomes of the reference study shows (largest: +0.392 balanced accuracy).

Flagged sources stay in the ranking, marked, and are passed over by the scenarios; nothing flagged is used
silently. Torch-free.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from tfp_mlflow._threads import thread_map
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.fingerprint import Fingerprint
from tfp_mlflow.spec import FingerprintSpec

__all__ = ["Guard", "FingerprintStats", "MAX_PLAUSIBLE_GAIN", "OUTLIER_Z", "MIN_REFERENCE", "parse_trusted"]

#: Largest believable gain of a result over its task's baseline (metric points). The reference's 117,060
#: published transfer outcomes (architecture, augmentation, pretraining, co-training; both metrics, every
#: repetition, full and shrunk targets) gain at most 0.392 over the target's mean baseline;
#: ``tests/test_guard.py`` checks that every one stays below.
MAX_PLAUSIBLE_GAIN = 0.40
#: Robust z-score (median / scaled MAD) beyond which a fingerprint statistic is implausible.
OUTLIER_Z = 6.0
#: Fewest reference fingerprints for the spread to mean anything; below it only the exact checks run.
MIN_REFERENCE = 8
#: Fewest tasks of one contributor for its own vote on what is plausible (smaller ones are pooled).
MIN_GROUP = 3
#: Bumped when the statistics change, so cached values are recomputed.
STATS_VERSION = 1


def parse_trusted(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"alice,reference:*"`` or a list of patterns -> a tuple; ``None``/empty -> trust everyone."""
    if value is None:
        return None
    patterns = [p.strip() for p in (value.split(",") if isinstance(value, str) else value)]
    patterns = [p for p in patterns if p]
    if len(patterns) > 256 or any(len(p) > 256 for p in patterns):
        raise BadInputError("--trusted takes at most 256 contributor patterns of at most 256 characters")
    return tuple(patterns) or None


@dataclass(frozen=True)
class FingerprintStats:
    """What the guard reads of one fingerprint (small variant); cheap to cache as JSON."""

    entropy: float        # mean per-feature Miller-Madow entropy of the histograms (nats)
    edge_mass: float      # mean share of draws in the two clipping bins
    counts_sha256: str    # the histograms' content, to spot a replay of another task's fingerprint

    @classmethod
    def of(cls, fingerprint: Fingerprint, spec: FingerprintSpec) -> FingerprintStats:
        counts = np.asarray(fingerprint.counts_of(guard_variant(spec)), dtype=np.float64)
        n = float(fingerprint.num_draws)
        p = counts / n
        with np.errstate(divide="ignore", invalid="ignore"):
            plugin = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(axis=1)
        # Miller-Madow: removes most of the plug-in estimate's bias, so 300-draw and 10,000-draw tasks compare.
        entropy = plugin + ((counts > 0).sum(axis=1) - 1) / (2.0 * n)
        edge_mass = p[:, 0] + p[:, -1]
        return cls(entropy=float(entropy.mean()), edge_mass=float(edge_mass.mean()),
                   counts_sha256=hashlib.sha256(np.ascontiguousarray(counts, dtype=np.int64).tobytes()).hexdigest())


def guard_variant(spec: FingerprintSpec) -> str:
    """The variant the guard reads: ``small`` (100 bins) when the spec has it, else its coarsest."""
    return "small" if "small" in spec.variants else min(spec.variants, key=lambda v: spec.variants[v])


@dataclass(frozen=True)
class Guard:
    """Trust patterns and the plausibility checks of one recommendation.

    Parameters
    ----------
    trusted : tuple of str, optional
        ``fnmatch`` patterns of trusted contributors; ``None`` trusts everyone (plausibility checks still run).
    max_gain : float
        A result more than this above its task's baseline is flagged.
    outlier_z : float
        Robust z-score beyond which a fingerprint statistic is flagged.
    """

    trusted: tuple[str, ...] | None = None
    max_gain: float = MAX_PLAUSIBLE_GAIN
    outlier_z: float = OUTLIER_Z

    def trusts(self, contributor: str) -> bool:
        return self.trusted is None or any(fnmatch.fnmatchcase(contributor, p) for p in self.trusted)

    def fingerprint_flags(self, stats: Mapping[str, FingerprintStats], contributors: Mapping[str, str]
                          ) -> tuple[dict[str, list[str]], str | None]:
        """Reasons per flagged task name, and a note when the reference population is too small to judge spread."""
        flags: dict[str, list[str]] = {}
        owners: dict[str, list[str]] = {}
        for name, s in stats.items():
            owners.setdefault(s.counts_sha256, []).append(name)
        for names in owners.values():
            for name in names:
                others = [o for o in names if o != name and contributors.get(o) != contributors.get(name)]
                if others and self.trusted is not None and self.trusts(contributors.get(name, "")):
                    # A trusted task copied by someone untrusted stays usable: the copy is what is flagged.
                    others = [o for o in others if self.trusts(contributors.get(o, ""))]
                if others:
                    flags.setdefault(name, []).append(
                        f"its histograms are identical to {others[0]!r}'s, contributed by "
                        f"{contributors.get(others[0]) or 'someone else'} (a replay under another name?)")
        # Each account's tasks are judged against every other (trusted) account's tasks separately, and flagged when
        # they are outliers for most of them: each account has one vote however many tasks it contributed, so an
        # account cannot become "the population" by volume and make the honest tasks look like the outliers.
        by_contributor: dict[str, list[str]] = {}
        for name in stats:
            by_contributor.setdefault(contributors.get(name, ""), []).append(name)
        judged_any = False
        for contributor, names in by_contributor.items():
            groups = _voting_groups({c: m for c, m in by_contributor.items()
                                     if c != contributor and self.trusts(c)})
            if sum(len(g) for g in groups) < MIN_REFERENCE:
                continue
            judged_any = True
            for name in names:
                votes, details = 0, []
                for group in groups:
                    reasons = self._outlier(stats[name], [stats[n] for n in group])
                    votes += bool(reasons)
                    details.extend(reasons)
                if votes * 2 > len(groups):
                    flags.setdefault(name, []).append(
                        f"contributed by {contributor or 'unknown'}: {details[0]} (an outlier for {votes} of the "
                        f"{len(groups)} other contributors' task sets)")
        if not judged_any:
            return flags, (f"fewer than {MIN_REFERENCE} fingerprints by other (trusted) contributors: their spread "
                           f"is not judged; only replays were looked for")
        return flags, None

    def _outlier(self, stats: FingerprintStats, reference: Sequence[FingerprintStats]) -> list[str]:
        """Why ``stats`` lies outside the spread of ``reference`` (robust z beyond ``outlier_z``), if it does."""
        reasons = []
        for field, label in (("entropy", "mean histogram entropy"), ("edge_mass", "share of draws in clipping bins")):
            values = [getattr(s, field) for s in reference]
            median = statistics.median(values)
            scale = max(1.4826 * statistics.median(abs(v - median) for v in values), 0.01 * abs(median), 1e-6)
            z = (getattr(stats, field) - median) / scale
            if abs(z) > self.outlier_z:
                reasons.append(f"its {label} {getattr(stats, field):.3g} is {abs(z):.0f} robust deviations from "
                               f"the median {median:.3g}")
        return reasons

    def knowledge_flag(self, value: float | None, baselines: Sequence[float]) -> str | None:
        """Why a result contradicts its task's baseline (median of the baselines), or ``None``."""
        if value is None or not baselines:
            return None
        baseline = statistics.median(baselines)
        if value - baseline > self.max_gain:
            return (f"claims {value:.3f}, {value - baseline:+.3f} over the task's own baseline {baseline:.3f}; no "
                    f"published transfer outcome gained more than {self.max_gain:.2f}")
        return None


def _voting_groups(by_contributor: Mapping[str, list[str]]) -> list[list[str]]:
    """One task set per contributor with at least ``MIN_GROUP`` tasks; the smaller ones pooled into one more."""
    groups = [names for names in by_contributor.values() if len(names) >= MIN_GROUP]
    pooled = [n for names in by_contributor.values() if len(names) < MIN_GROUP for n in names]
    return groups + ([pooled] if len(pooled) >= MIN_GROUP else [])


def fingerprint_stats(cloud, tasks: Sequence) -> dict[str, FingerprintStats]:
    """Guard statistics of the cloud tasks' fingerprints, kept in the local cache per fingerprint (one JSON entry
    per spec, by checksum): a query computes them only for fingerprints it has not seen, and the spec itself is read
    only then, so a warm query costs one JSON read and a new task one fingerprint's statistics."""

    spec_id = cloud.spec_id()
    with_fp = [t for t in tasks if t.has_fingerprint]
    if spec_id is None or not with_fp:
        return {}
    key = "guard-" + hashlib.sha256(json.dumps([STATS_VERSION, spec_id]).encode()).hexdigest()[:32]
    cached = cloud.cache.read_json(key)
    known: dict[str, FingerprintStats] = {}
    if isinstance(cached, dict):
        for sha, value in cached.items():
            try:
                known[sha] = FingerprintStats(**value)
            except TypeError:
                pass
    missing = list({t.fingerprint_sha256: t for t in with_fp if t.fingerprint_sha256 not in known}.values())
    if missing:
        spec = cloud.spec()

        def one(task) -> tuple[str, FingerprintStats]:
            return task.fingerprint_sha256, FingerprintStats.of(
                cloud.fingerprint(task, spec, variants=(guard_variant(spec),), moments=False), spec)
        known.update(thread_map(one, missing))   # decompression releases the GIL
        current = {t.fingerprint_sha256 for t in with_fp}
        keep = known if len(known) <= 2 * len(current) + 1000 else {k: v for k, v in known.items() if k in current}
        cloud.cache.write_json(key, {sha: asdict(s) for sha, s in keep.items()})
    return {t.name: known[t.fingerprint_sha256] for t in with_fp}
