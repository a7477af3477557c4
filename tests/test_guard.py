"""The poisoning guard: trusted contributors, implausible fingerprints, knowledge that contradicts its baseline."""
from __future__ import annotations

import glob
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tfp_mlflow import FingerprintBuilder, FingerprintSpec
from tfp_mlflow.cli import main
from tfp_mlflow.cloud import Cloud, Knowledge, KnowledgeKind, KnowledgeRow
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.fingerprint import Fingerprint
from tfp_mlflow.guard import MAX_PLAUSIBLE_GAIN, MIN_REFERENCE, FingerprintStats, Guard, parse_trusted
from tfp_mlflow.recommend import recommend
from tfp_mlflow.reference import bundled_reference
from tfp_mlflow.testing.stores import sqlite_uri

NUM_FEATURES = 12


@pytest.fixture(scope="module")
def spec():
    """Edges over ten "domains" at different offsets: each task fills a slice of every feature's range, as real
    backbone features do (the shipped spec's example tasks put ~70 % of their draws in the clipping bins)."""
    rng = np.random.default_rng(1)
    reference = np.concatenate([rng.gamma(2.0, 1.0, size=(200, NUM_FEATURES)) + offset
                                for offset in np.linspace(0, 20, 10)])
    return FingerprintSpec.calibrate(reference, backbone="test-backbone", weights_sha256="0" * 64,
                                     variants={"small": 100, "large": 1000})


def _honest(spec, name: str, seed: int, n: int = 400, draw: int | None = None) -> Fingerprint:
    """Task ``seed``'s distribution (its shape and offsets); ``draw`` seeds another sample of the same task."""
    task = np.random.default_rng(seed)
    shape, offsets = 1.5 + 2 * task.random(), task.uniform(0, 20, size=NUM_FEATURES)
    sample = np.random.default_rng(seed if draw is None else 1000 + draw)
    builder = FingerprintBuilder(spec)
    builder.update(sample.gamma(shape, 1.0, size=(n, NUM_FEATURES)) + offsets)
    return builder.build(name=name, keywords=["x-ray"], num_images=100, num_classes=2)


def _forged(spec, name: str, counts: dict[str, np.ndarray], feature_sum: np.ndarray) -> Fingerprint:
    """A fingerprint written by hand, as a poisoner would: any counts, any sums."""
    draws = int(next(iter(counts.values())).sum(axis=1)[0])
    return Fingerprint(counts=counts, feature_sum=feature_sum, num_draws=draws, spec_id=spec.id, name=name,
                       keywords=("x-ray",), num_images=100, num_classes=2)


def _centred_sums(spec, counts: dict[str, np.ndarray]) -> np.ndarray:
    """Feature sums consistent with the histograms (every draw at its bin's centre)."""
    small = counts["small"].astype(float)
    bins = small.shape[1]
    centres = spec.lo[:, None] + (spec.hi - spec.lo)[:, None] * (np.arange(bins) + 0.5) / bins
    return (small * centres).sum(axis=1)


def _attacks(spec, honest: list[Fingerprint]) -> dict[str, Fingerprint]:
    rng = np.random.default_rng(7)
    m, draws = spec.num_features, 400

    def spread(weights: np.ndarray, bins: int) -> np.ndarray:
        return np.stack([rng.multinomial(draws, w) for w in weights]).astype(np.int64)

    def coarse_to(small: np.ndarray, bins: int) -> np.ndarray:
        # The large variant must agree with the small one for the file to load; refine each small bin evenly.
        factor = bins // small.shape[1]
        return np.stack([np.concatenate([rng.multinomial(c, np.full(factor, 1 / factor)) for c in row])
                         for row in small]).astype(np.int64)

    uniform = spread(np.full((m, 100), 1 / 100), 100)
    point = np.zeros((m, 100), dtype=np.int64)
    point[:, 37] = draws
    attacks = {}
    for name, small in (("noise", uniform), ("point", point)):
        counts = {"small": small, "large": coarse_to(small, 1000)}
        attacks[name] = _forged(spec, name, counts, _centred_sums(spec, counts))
    copy = honest[3]
    counts = {v: np.asarray(copy.counts_of(v)) for v in copy.variants}
    attacks["replay"] = _forged(spec, "replay", counts, np.asarray(copy.feature_sum))
    return attacks


def test_fingerprint_checks_flag_each_forgery_and_no_honest_task(spec):
    honest = [_honest(spec, f"h{i}", seed=i) for i in range(10)]
    attacks = _attacks(spec, honest)
    stats = {fp.name: FingerprintStats.of(fp, spec) for fp in [*honest, *attacks.values()]}
    contributors = {**{fp.name: "alice" for fp in honest}, **{name: "mallory" for name in attacks}}
    flags, note = Guard().fingerprint_flags(stats, contributors)
    assert note is None
    assert "entropy" in " ".join(flags["noise"]) and "entropy" in " ".join(flags["point"])
    assert "identical to 'h3'" in " ".join(flags["replay"])
    # The replayed task is flagged too (the guard cannot tell who copied whom) and no other honest task is.
    assert set(flags) == {"noise", "point", "replay", "h3"}
    # Trusting alice makes her tasks the reference; the same forgeries stand out, and her own tasks do not.
    flags, _ = Guard(trusted=("alice",)).fingerprint_flags(stats, contributors)
    assert set(flags) == {"noise", "point", "replay"}


def test_fingerprint_spread_is_not_judged_on_too_few_tasks(spec):
    honest = [_honest(spec, f"h{i}", seed=i) for i in range(4)]
    noise = _attacks(spec, [*honest, *honest])["noise"]
    stats = {fp.name: FingerprintStats.of(fp, spec) for fp in [*honest, noise]}
    contributors = {**{fp.name: f"lab{i}" for i, fp in enumerate(honest)}, "noise": "mallory"}
    flags, note = Guard().fingerprint_flags(stats, contributors)
    assert flags == {} and f"fewer than {MIN_REFERENCE} fingerprints by other" in note


def test_an_account_with_more_tasks_than_the_honest_ones_cannot_invert_the_guard(spec):
    """Sybil: mallory contributes 40 near-copies of one forged task (each a different draw, so no replay flag),
    more than alice's and bob's tasks together. Each contributor weighs once: mallory's tasks are the outliers."""
    honest = [_honest(spec, f"h{i}", seed=i) for i in range(12)]
    forged = _attacks(spec, honest)["point"]
    copies = {}
    for i in range(40):
        counts = {v: np.asarray(forged.counts_of(v)).copy() for v in forged.variants}
        j, moved = i % spec.num_features, 1 + i // spec.num_features
        for table in counts.values():        # a draw or a few moved to the next bin: a different file each
            bin_ = int(np.argmax(table[j]))
            table[j, bin_] -= moved
            table[j, bin_ + 1] += moved
        copies[f"m{i}"] = FingerprintStats.of(_forged(spec, f"m{i}", counts, np.asarray(forged.feature_sum)), spec)
    stats = {**{fp.name: FingerprintStats.of(fp, spec) for fp in honest}, **copies}
    assert len({s.counts_sha256 for s in copies.values()}) == 40          # no two copies are identical
    contributors = {**{f"h{i}": ("alice" if i % 2 else "bob") for i in range(12)}, **{n: "mallory" for n in copies}}
    flags, note = Guard().fingerprint_flags(stats, contributors)
    assert note is None
    assert set(flags) == set(copies), sorted(flags)
    assert all("contributed by mallory" in " ".join(reasons) for reasons in flags.values())


def test_statistics_agree_across_draw_counts(spec):
    """Miller-Madow entropy: the same distribution drawn 300 or 10,000 times is not an outlier of itself."""
    few, many = (FingerprintStats.of(_honest(spec, "t", seed=1, n=n), spec) for n in (300, 10_000))
    assert abs(few.entropy - many.entropy) < 0.06 * many.entropy


def test_the_gain_threshold_lies_above_every_published_outcome():
    """No published transfer outcome of the 71-task study (117,060 rows) would be flagged as a contradiction."""
    exp = Path(bundled_reference()) / "exp"
    gains, rows = [], 0
    for path in sorted(glob.glob(str(exp / "*.csv"))):
        parts = Path(path).stem.split("%")
        if parts[0] == "load_baseline_experiment":
            continue
        metric, shrunk, validation = (parts[1], *parts[2:]) if len(parts) == 4 else (parts[1], "False", parts[2])
        baseline = pd.read_csv(exp / f"load_baseline_experiment%{metric}%{shrunk}%{validation}.csv",
                               index_col=0).mean()
        outcomes = pd.read_csv(path, index_col=0)
        gain = outcomes["p"].to_numpy() - baseline.reindex(outcomes["t"]).to_numpy()
        gains.append(np.nanmax(gain))
        rows += int(np.isfinite(gain).sum())
    assert rows == 117_060
    assert 0.35 < max(gains) < MAX_PLAUSIBLE_GAIN
    guard = Guard()
    assert guard.knowledge_flag(0.55 + max(gains), [0.55]) is None
    assert "over the task's own baseline" in guard.knowledge_flag(0.99, [0.55, 0.56, 0.54])


def test_trusted_patterns_are_validated():
    assert parse_trusted(" alice, reference:* ,") == ("alice", "reference:*")
    assert parse_trusted("") is None and parse_trusted(None) is None
    assert Guard(trusted=("reference:*",)).trusts("reference:Godau et al. 2024")
    assert not Guard(trusted=("alice",)).trusts("alice2")
    with pytest.raises(BadInputError, match="at most 256"):
        parse_trusted(["x"] * 300)


@pytest.fixture(scope="module")
def poisoned_cloud(spec, tmp_path_factory):
    """Alice and Bob contribute honest tasks with measured knowledge; Mallory a replay and a too-good result."""
    root = tmp_path_factory.mktemp("poisoned")
    cloud = Cloud(sqlite_uri(root / 'mlflow.db'), cache_dir=root / "cache")
    honest = [_honest(spec, f"h{i}", seed=i) for i in range(10)]
    for i, fp in enumerate(honest):
        knowledge = [Knowledge(fp.name, KnowledgeKind.BASELINE, (KnowledgeRow(balanced_accuracy=0.55),)),
                     Knowledge(fp.name, KnowledgeKind.ARCHITECTURE,
                               (KnowledgeRow(architecture="resnet18", balanced_accuracy=0.70),))]
        cloud.contribute(fp, knowledge=knowledge, spec=spec, contributor="alice" if i % 2 else "bob")
    # Mallory: her replay of h3 recommends her architecture; her "result" on Alice's h5 is too good to be true.
    cloud.contribute(_attacks(spec, honest)["replay"], name="mallory_task", contributor="mallory",
                     knowledge=[Knowledge("mallory_task", KnowledgeKind.ARCHITECTURE,
                                          (KnowledgeRow(architecture="mallory_net", balanced_accuracy=0.99),))])
    cloud.add_knowledge(Knowledge("h5", KnowledgeKind.ARCHITECTURE,
                                  (KnowledgeRow(architecture="mallory_net", balanced_accuracy=0.99),)),
                        contributor="mallory")
    return cloud, honest


def test_recommend_shows_flagged_sources_and_results_without_using_them(poisoned_cloud, spec):
    cloud, _ = poisoned_cloud
    target = _honest(spec, "target", seed=3, n=300, draw=1)   # drawn like h3: Mallory's copy ranks first
    result = recommend(cloud, target, top_k=3, scenarios=("architecture",), log=False)
    ranked = {r.source: r for r in result.ranking}
    assert {"mallory_task", "h3"} <= set(list(ranked)[:3])
    assert ranked["mallory_task"].flags and ranked["mallory_task"].contributor == "mallory"
    items = result.suggestions("architecture")
    assert len(items) == 3 and not {"mallory_task", "h3"} & {i.source for i in items}
    assert all(i.architecture == "resnet18" and i.flags == [] for i in items)
    assert any("flagged by the poisoning guard were passed over" in n
               for n in result.scenarios["architecture"].notes)
    knowledge_flags = [f for f in result.flagged if f["what"] == "knowledge"]
    if "h5" in [i.source for i in items]:   # Mallory's 0.99 on h5 was read and refused
        assert knowledge_flags and knowledge_flags[0]["contributor"] == "mallory"
    assert {f["source"] for f in result.flagged if f["what"] == "task"} == {"mallory_task", "h3"}
    # --include-flagged uses them, marked.
    loose = recommend(cloud, target, top_k=3, scenarios=("architecture",), log=False, include_flagged=True)
    first = loose.suggestions("architecture")[0]
    assert first.source in {"mallory_task", "h3"} and first.flags


def test_contradicting_knowledge_is_flagged_and_passed_over(poisoned_cloud, spec):
    cloud, _ = poisoned_cloud
    target = _honest(spec, "target", seed=5, n=300, draw=1)   # drawn like h5
    result = recommend(cloud, target, top_k=1, scenarios=("architecture",), log=False, trusted="alice,mallory")
    item = result.suggestions("architecture")[0]
    assert item.source == "h5" and item.architecture == "resnet18"
    [flag] = [f for f in result.flagged if f["what"] == "knowledge"]
    assert flag["source"] == "h5" and flag["contributor"] == "mallory" and "+0.440" in flag["reason"]
    loose = recommend(cloud, target, top_k=1, scenarios=("architecture",), log=False, include_flagged=True)
    item = loose.suggestions("architecture")[0]
    assert item.architecture == "mallory_net" and "over the task's own baseline" in item.flags[0]


def test_trusted_contributors_restrict_sources_and_knowledge(poisoned_cloud, spec):
    cloud, _ = poisoned_cloud
    target = _honest(spec, "target", seed=3, n=300, draw=1)
    result = recommend(cloud, target, top_k=3, log=False, trusted=["alice", "bob"])
    assert "mallory_task" not in [r.source for r in result.ranking]
    assert result.trusted == ["alice", "bob"] and "1 tasks by contributors outside --trusted" in result.notes[0]
    # Nothing of Mallory's is read: her result on h5 is not even flagged, it is not considered.
    assert not [f for f in result.flagged if f["contributor"] == "mallory"]
    # Mallory's copy cannot knock out the trusted original: with trust given, only the copy is flagged.
    assert result.flagged == [] and all(r.flags == [] for r in result.ranking)
    with pytest.raises(BadInputError, match="widen --trusted"):
        recommend(cloud, target, log=False, trusted="nobody")
    runner = CliRunner()
    out = runner.invoke(main, ["recommend", str(target.save(Path(cloud.uri.removeprefix("sqlite:///")).parent
                                                            / "t.npz")),
                               "--tracking-uri", cloud.uri, "--no-log", "--json"])
    assert out.exit_code == 0, out.output
    payload = json.loads(out.stdout)
    assert {f["source"] for f in payload["flagged"] if f["what"] == "task"} == {"mallory_task", "h3"}
    out = runner.invoke(main, ["recommend", str(Path(cloud.uri.removeprefix("sqlite:///")).parent / "t.npz"),
                               "--tracking-uri", cloud.uri, "--no-log", "--trusted", "alice,bob"])
    assert out.exit_code == 0, out.output
    assert "FLAGGED" not in out.output and "mallory" not in out.output
    out = runner.invoke(main, ["recommend", str(Path(cloud.uri.removeprefix("sqlite:///")).parent / "t.npz"),
                               "--tracking-uri", cloud.uri, "--no-log"])
    assert "FLAGGED" in out.output and "flagged task of 'mallory_task' by mallory" in out.output
