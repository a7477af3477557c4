"""The knowledge map: the cloud's tasks placed in two dimensions by a fingerprint selector's distances.

Classical (Torgerson) MDS of the symmetrised distances (bKLD is not symmetric), each target's column first offset by
its closest source, since a selector compares sources for one target and only differences within a column carry
meaning. A task at a non-finite distance from any other is degenerate for that selector: it is quarantined (with
the reason) and not drawn. The page's map and ``GET /tfp/api/map`` are this, cached under the cloud's state.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from tfp_mlflow.cloud.base import KnowledgeStore
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.prepared import prepared_sources
from tfp_mlflow.selectors import DEFAULT_SELECTOR, get_selector

__all__ = ["knowledge_map", "classical_mds", "MAP_MAX_TASKS"]

#: Tasks drawn on the knowledge map (its pairwise distances grow with the square).
MAP_MAX_TASKS = 400
MAP_METHOD = "classical MDS of the symmetrised distances, each target's offset by its closest source"


def classical_mds(distances: np.ndarray, dimensions: int = 2) -> np.ndarray:
    """Classical (Torgerson) MDS of a distance matrix, symmetrised first; a fixed orientation for the same input."""
    d = np.asarray(distances, dtype=float)
    d = 0.5 * (d + d.T)
    n = len(d)
    if n < 2:
        return np.zeros((n, dimensions))
    centre = np.eye(n) - 1.0 / n
    b = -0.5 * centre @ (d ** 2) @ centre
    values, vectors = np.linalg.eigh(b)
    top = np.argsort(values)[::-1][:dimensions]
    coords = vectors[:, top] * np.sqrt(np.clip(values[top], 0.0, None))
    coords = coords * np.where(coords.sum(axis=0) < 0, -1.0, 1.0)
    if coords.shape[1] < dimensions:
        coords = np.pad(coords, ((0, 0), (0, dimensions - coords.shape[1])))
    return coords


def knowledge_map(cloud: KnowledgeStore, selector: str = DEFAULT_SELECTOR, *,
                  max_tasks: int = MAP_MAX_TASKS) -> dict[str, Any]:
    """``{"selector", "points": [{"name", "domain", "num_images", "x", "y"}], "quarantined", "method", "left_out",
    "without_fingerprint"}`` for the cloud's conforming tasks with a fingerprint (the first ``max_tasks``)."""
    chooser = get_selector(selector)
    if not chooser.needs_fingerprint:
        raise BadInputError(f"the map needs a fingerprint selector; {selector!r} ranks by keywords")
    every_task = cloud.conforming(cloud.tasks())
    drawn = [t for t in every_task if t.has_fingerprint]
    left_out = max(0, len(drawn) - max_tasks)
    drawn = drawn[:max_tasks]
    identity = [selector, cloud.spec_id(), [(t.name, t.fingerprint_sha256) for t in drawn]]
    key = "map-" + hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]
    cached = cloud.cache.read_json(key)
    if isinstance(cached, dict):
        return cached
    points = []
    if drawn:
        prepared = prepared_sources(cloud, chooser, drawn)
        targets = cloud.as_tasks(drawn, with_fingerprints=True, variants=chooser.variants or ("small",),
                                 moments=chooser.needs_moments)
        matrix = np.stack([chooser.distances(t, prepared) for t in targets], axis=1)   # rows sources
        bad = ~np.isfinite(matrix).all(axis=0) | ~np.isfinite(matrix).all(axis=1)
        for index in np.flatnonzero(bad):
            cloud.quarantine("fingerprint", drawn[index], f"a {selector} distance to it is not finite",
                             task=drawn[index].name)
        keep = np.flatnonzero(~bad)
        drawn = [drawn[i] for i in keep]
        matrix = matrix[np.ix_(keep, keep)]
        matrix = matrix - matrix.min(axis=0, keepdims=True) if len(keep) else matrix
        np.fill_diagonal(matrix, 0.0)
        points = [{"name": t.name, "domain": t.domain or "unknown", "num_images": t.num_images,
                   "x": float(x), "y": float(y)} for t, (x, y) in zip(drawn, classical_mds(matrix))]
    result = {"selector": selector, "points": points, "quarantined": cloud.quarantined(), "method": MAP_METHOD,
              "left_out": left_out, "without_fingerprint": len(every_task) - len(drawn) - left_out}
    cloud.cache.write_json(key, result)
    return result
