"""Chance level and noise: the formulas, and what a recommendation does with a score guessing would reach."""
from __future__ import annotations

import math

import pytest

from tfp_mlflow.cloud.knowledge import Knowledge, KnowledgeRow, row_json
from tfp_mlflow.cloud.results import read_results
from tfp_mlflow.cloud.schema import KnowledgeKind
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.noise import at_chance, chance_level, noise_reason, standard_error, within_noise
from tfp_mlflow.recommend import recommend
from tfp_mlflow.selectors.track_record import Outcomes, TrackRecord
from tfp_mlflow.testing.memory import memory_cloud


def test_one_image_of_eighteen_is_a_large_step_and_the_formulas_say_so():
    assert chance_level("balanced_accuracy", 4) == 0.25 and chance_level("auroc", 4) == 0.5
    assert chance_level("balanced_accuracy", None) is None
    assert standard_error(0.5, 18) == pytest.approx(math.sqrt(0.25 / 18))
    assert standard_error(1.0, 18) == pytest.approx(math.sqrt(1 / 18) / math.sqrt(18))   # never noise-free
    assert standard_error(0.5, None) is None
    # AUROC at chance on a balanced split: about 1 / sqrt(3 n) (Hanley and McNeil).
    assert standard_error(0.5, 300, "auroc") == pytest.approx(1 / math.sqrt(3 * 300), rel=0.02)
    # 0.611 on 18 images of two classes (two images above half) cannot be told from guessing; 0.833 can.
    assert at_chance(0.611, "balanced_accuracy", 2, 18) is True
    assert at_chance(0.833, "balanced_accuracy", 2, 18) is False
    assert at_chance(0.611, "balanced_accuracy", 2, 2000) is False
    assert at_chance(0.45, "balanced_accuracy", 2, None) is True            # below chance needs no size
    assert at_chance(0.611, "balanced_accuracy", 2, None) is None
    assert within_noise(0.889, 0.778, 18) is True and within_noise(0.889, 0.778, 2000) is False
    assert within_noise(0.889, None, 18) is None
    reason = noise_reason(0.5, "balanced_accuracy", 2, 18)
    assert reason["at_chance"] is True and reason["chance_level"] == 0.5 and reason["held_out"] == 18


def _task(cloud, name: str, keywords: list[str], architecture: str, score: float, held_out: int | None) -> None:
    row = KnowledgeRow(architecture=architecture, repetition=0, balanced_accuracy=score, held_out=held_out)
    cloud.contribute(None, name=name, keywords=keywords, num_images=90, num_classes=2,
                     knowledge=[Knowledge(name, KnowledgeKind.ARCHITECTURE, (row,))])


def test_a_chance_level_result_is_not_offered_as_evidence(tmp_path):
    cloud = memory_cloud(tmp_path / "cache")
    _task(cloud, "closest", ["x-ray", "chest", "adult"], "tf_efficientnet_lite2", 0.5, 18)   # a baseline at chance
    _task(cloud, "second", ["x-ray", "chest"], "tf_efficientnet_lite1", 0.889, 18)
    _task(cloud, "unsized", ["x-ray"], "tf_efficientnet_lite0", 0.6, None)                   # size unknown: kept
    result = recommend(cloud, keywords=["x-ray", "chest", "adult"], name="new", selector="manual", log=False,
                       scenarios=["architecture"])
    assert [r.source for r in result.ranking][:3] == ["closest", "second", "unsized"]
    items = result.suggestions("architecture")
    assert [i.source for i in items] == ["second", "unsized"]
    assert items[0].evidence["noise"] == {"held_out": 18, "standard_error": round(math.sqrt(0.889 * 0.111 / 18), 4),
                                          "chance_level": 0.5, "at_chance": False}
    assert items[1].evidence["noise"]["at_chance"] is None
    notes = result.scenarios["architecture"].notes
    assert any("1 closer sources measured only scores at chance level" in n for n in notes)
    # The same cloud with the closest task's result on 2,000 images: 0.5 is still chance, 0.56 no longer is.
    _task(cloud, "closest", ["x-ray", "chest", "adult"], "tf_efficientnet_lite2", 0.56, 2000)
    again = recommend(cloud, keywords=["x-ray", "chest", "adult"], name="new", selector="manual", log=False,
                      scenarios=["architecture"])
    assert again.suggestions("architecture")[0].source == "closest"


def test_a_gain_within_its_noise_is_counted_as_such():
    records = []
    for target, held_out in (("t1", 18), ("t2", 18), ("t3", 5000), ("t4", None)):
        for source, gain in (("good", 0.1), ("other", 0.0)):
            records.append({"scenario": "cotraining", "metric": "balanced_accuracy", "r": 0, "s": source,
                            "t": target, "p": 0.7 + gain, "baseline": 0.7, "n": held_out})
    model = TrackRecord(Outcomes.from_records(records), ["good", "other", "t1", "t2", "t3", "t4"])
    evidence = model.evidence("cotraining", "good", "query")
    # +0.1 on 18 images is within noise (twice the error is about 0.30), on 5,000 it is not; unknown size: unsaid.
    assert (evidence.tried, evidence.improved, evidence.within_noise) == (4, 4, 2)
    assert model.evidence("cotraining", "good", "t1").within_noise == 1      # the query's own target unread
    assert evidence.to_json()["within_noise"] == 2


def test_results_files_carry_the_held_out_size_and_old_rows_keep_their_hash(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("architecture,balanced_accuracy,held_out\nresnet18,0.8,120\n")
    [knowledge] = read_results(path, "task")
    assert knowledge.rows[0].held_out == 120
    path.write_text("architecture,balanced_accuracy,held_out\nresnet18,0.8,12.5\n")
    with pytest.raises(BadInputError, match=r"row 1: held_out '12.5' is not a small whole number"):
        read_results(path, "task")
    with pytest.raises(BadInputError, match="held_out=0 is not a count of images"):
        KnowledgeRow(architecture="resnet18", balanced_accuracy=0.8, held_out=0).validate("architecture")
    assert "held_out" not in row_json(KnowledgeRow(architecture="resnet18"))   # a row without it hashes as before
    assert row_json(KnowledgeRow(architecture="resnet18", held_out=9))["held_out"] == 9
