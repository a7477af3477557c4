"""The knowledge map: classical MDS recovers a plane; on a real SQLite cloud, tasks of one family land together,
the map is cached under the cloud's state, and a keyword selector is refused in one line."""
from __future__ import annotations

import numpy as np
import pytest

from tfp_mlflow.cloud import Cloud
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.knowledge_map import classical_mds, knowledge_map
from tfp_mlflow.testing.stores import sqlite_uri


def test_classical_mds_recovers_points_on_a_plane():
    points = np.random.default_rng(0).normal(size=(7, 2))
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    coords = classical_mds(distances)
    assert np.allclose(np.linalg.norm(coords[:, None] - coords[None], axis=-1), distances, atol=1e-8)
    assert np.array_equal(coords, classical_mds(distances)) and classical_mds(np.zeros((1, 1))).shape == (1, 2)


def test_tasks_of_one_family_land_together_and_the_map_is_cached(tmp_path, make_fingerprint, small_spec):
    cloud = Cloud(sqlite_uri(tmp_path / 'mlflow.db'), cache_dir=tmp_path / "cache")
    for i, (name, shape) in enumerate([("a_1", 1.5), ("a_2", 1.5), ("b_1", 4.0), ("b_2", 4.0)]):
        cloud.contribute(make_fingerprint(name, seed=i, shape=shape, n=3000), domain=name[0], spec=small_spec)
    cloud.contribute(None, name="described", keywords=["x-ray"], num_images=10, num_classes=2)
    drawn = knowledge_map(cloud)
    at = {p["name"]: np.array([p["x"], p["y"]]) for p in drawn["points"]}
    assert sorted(at) == ["a_1", "a_2", "b_1", "b_2"] and drawn["without_fingerprint"] == 1
    within = max(np.linalg.norm(at["a_1"] - at["a_2"]), np.linalg.norm(at["b_1"] - at["b_2"]))
    assert within < min(np.linalg.norm(at[a] - at[b]) for a in ("a_1", "a_2") for b in ("b_1", "b_2"))
    assert knowledge_map(cloud) == drawn
    small = knowledge_map(cloud, max_tasks=2)
    assert len(small["points"]) == 2 and small["left_out"] == 2
    with pytest.raises(BadInputError, match="needs a fingerprint selector"):
        knowledge_map(cloud, "manual")
