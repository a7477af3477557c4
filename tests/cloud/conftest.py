"""Fixtures of the cloud's tests: four source tasks in two families, a target of the first, their knowledge."""
from __future__ import annotations

import pytest

from tfp_mlflow.cloud import Cloud, Knowledge, KnowledgeKind, KnowledgeRow


def knowledge_of(task: str, best: str, score: float) -> list[Knowledge]:
    return [Knowledge(task, KnowledgeKind.ARCHITECTURE,
                      (KnowledgeRow(architecture="resnet18", balanced_accuracy=score - 0.1, auroc=0.7),
                       KnowledgeRow(architecture=best, balanced_accuracy=score, auroc=0.8, evidence_run="r1"))),
            Knowledge(task, KnowledgeKind.POLICY, (KnowledgeRow(policy_id=f"{task}-policy"),),
                      policies={f"{task}-policy": {"transform": {"__class_fullname__": "HorizontalFlip", "p": 0.5}}})]


@pytest.fixture
def fingerprints(make_fingerprint):
    # Two families (gamma shapes) of two tasks each, plus a target from the first family.
    return {name: make_fingerprint(name, seed=i, shape=shape, n=3000, keywords=kw, num_images=100 + i)
            for i, (name, shape, kw) in enumerate([("a_1", 1.5, ("x-ray", "chest")), ("a_2", 1.5, ("x-ray",)),
                                                    ("b_1", 4.0, ("skin",)), ("b_2", 4.0, ("skin", "lesion")),
                                                    ("a_target", 1.5, ("x-ray", "chest"))])}


def fill(cloud: Cloud, fingerprints, spec) -> None:
    for name in ("a_1", "a_2", "b_1", "b_2"):
        cloud.contribute(fingerprints[name], domain=name[0], data_uri=f"/data/{name}", shareable=name != "a_2",
                         knowledge=knowledge_of(name, f"arch_{name}", 0.8), spec=spec)
