"""The demo's cloud, step by step on a plan small enough for the quick path: a source task drawn, fingerprinted
and contributed, its knowledge measured by a cold study, and the held-out task's final split (the whole demo is in
test_demo.py)."""
from __future__ import annotations

import csv
import json

import pytest

from tfp_mlflow.cloud import Cloud, Knowledge, KnowledgeKind, KnowledgeRow
from tfp_mlflow.demo.cloud import (
    DemoPlan,
    contribute_task,
    demo_space,
    final_manifest,
    held_out_task,
    measure_knowledge,
    source_tasks,
)
from tfp_mlflow.reference import Reference, bundled_reference
from tfp_mlflow.testing.stores import sqlite_uri
from tfp_mlflow.tune import NO_POLICY

pytestmark = pytest.mark.torch
PLAN = DemoPlan(families=("fundus",), sources_per_family=1, num_images=12, image_size=32, samples=12,
                knowledge_trials=1, epochs=1, test_images=6, policies=1)


@pytest.fixture
def cloud(tmp_path):
    """A cloud holding one published policy, as `tfp import-reference` leaves it."""
    cloud = Cloud(sqlite_uri(tmp_path / "mlflow.db"), cache_dir=tmp_path / "cache")
    study = Reference.load(bundled_reference(tmp_path / "reference"))
    (task, repetition), path = sorted(study.policy_files().items())[0]
    policy_id = f"{task}-rep{repetition}"
    cloud.contribute(None, name=task, keywords=["x-ray"], knowledge=[Knowledge(
        task, KnowledgeKind.POLICY, (KnowledgeRow(policy_id=policy_id),),
        policies={policy_id: json.loads(path.read_text())})])
    return cloud


def test_a_source_is_contributed_with_its_fingerprint_and_measured_by_a_cold_study(cloud, tmp_path):
    from tfp_mlflow.extract import load_backbone

    [source] = source_tasks(PLAN)
    path, fingerprint = contribute_task(cloud, source, tmp_path / "tasks", load_backbone("tf_efficientnet_lite0"),
                                        PLAN)
    stored = cloud.task(source.name)
    assert stored is not None and stored.has_fingerprint and stored.domain == "fundus"
    assert stored.data_uri == str(path.resolve()) and fingerprint.num_draws == PLAN.samples
    space = demo_space(cloud, PLAN)
    assert space.policies[0] == NO_POLICY and len(space.policies) == 1 + PLAN.policies
    assert set(space.architectures) <= {f"tf_efficientnet_lite{level}" for level in range(3)}
    trials = []
    result = measure_knowledge(cloud, source, path, space, PLAN, f"sqlite:///{tmp_path / 'optuna.db'}",
                               on_trial=trials.append)
    assert len(trials) == PLAN.knowledge_trials and result.best_params["architecture"] in space.architectures
    measured = cloud.knowledge(source.name, [KnowledgeKind.ARCHITECTURE])
    assert measured and measured[0].rows[0].architecture == result.best_params["architecture"]


def test_the_held_out_task_is_new_and_its_final_split_has_fresh_test_images(tmp_path):
    target = held_out_task("fundus", PLAN)
    assert target.name == "fundus_new" and target.name not in {t.name for t in source_tasks(PLAN)}
    assert held_out_task("fundus", PLAN, index=1).name == "fundus_new1"
    data = target.write(tmp_path / target.name)
    manifest = final_manifest(target, data, PLAN, tmp_path)
    with manifest.open() as handle:
        rows = list(csv.DictReader(handle))
    splits = [row["split"] for row in rows]
    assert splits.count("train") == PLAN.num_images and splits.count("test") == PLAN.test_images
    test_images = {(tmp_path / row["path"]).read_bytes() for row in rows if row["split"] == "test"}
    assert not test_images & {p.read_bytes() for p in data.glob("class_*/*.png")}   # drawn with another seed
