"""Rank candidate backbones on a dataset's own labelled images with transferability scores (``tfp rank-models``):
day-one advice for the architecture that needs no cloud. The ranking is logged as a run of ``tfp-model-rankings``."""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tfp_mlflow.cloud import KnowledgeStore, open_cloud
from tfp_mlflow.cloud.schema import MODEL_RANKING_EXPERIMENT, Kind, Tag
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.progress import Progress

__all__ = ["rank_models", "MODEL_RANKING_SCHEMA"]

MODEL_RANKING_SCHEMA = "tfp.model-ranking/1"
_NOTE = ("transferability scores did not reliably predict fine-tuned performance on medical tasks (Chaves et al., "
         "MICCAI 2023); weigh them with the cloud's measured evidence")


def rank_models(data: str | os.PathLike, cloud: KnowledgeStore | str | None = None, *,
                candidates: Sequence[str] | None = None, scores: Sequence[str] = ("logme",), samples: int = 500,
                weights: str | None = None, batch_size: int = 32, device: str | None = None, seed: int = 0,
                progress: bool = True, on_note: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Score ``candidates`` (default: the cloud's known architectures and the offline ones whose weights load
    here) on ``data``; returns the ranking payload (best first by ``scores[0]``) with the run it was logged as."""
    from tfp_mlflow.extract.probe import probe_model
    from tfp_mlflow.transferability import SCORES, score
    from tfp_mlflow.tune import loadable_architectures
    from tfp_mlflow.tune.study import cloud_architectures

    unknown = [s for s in scores if s not in SCORES]
    if unknown:
        raise BadInputError(f"unknown score {unknown[0]!r}; choose from {', '.join(SCORES)}")
    cloud = open_cloud(cloud)
    if candidates:
        names = list(candidates)
    else:
        names, left_out = loadable_architectures([f"tf_efficientnet_lite{i}" for i in range(3)]
                                                 + cloud_architectures(cloud))
        if left_out and on_note is not None:
            on_note(f"left out {len(left_out)} architectures whose weights cannot be loaded here: "
                    f"{', '.join(left_out[:6])}")
    if weights and len(names) != 1:
        raise BadInputError("--weights belongs to one architecture; give exactly one --candidates with it")
    rows: list[dict[str, Any]] = []
    with Progress(transient=True, disable=not progress) as bar:
        for name in names:
            job = bar.add_task(name, total=None)
            probe = probe_model(data, name, weights=weights, samples=samples, batch_size=batch_size, device=device,
                                seed=seed, on_batch=lambda n, job=job: bar.advance(job, n))
            row: dict[str, Any] = {"architecture": name, "weights": probe.weights_source, "images": len(probe.labels)}
            for score_name in scores:
                needs_head = SCORES[score_name][1] == "probabilities"
                row[score_name] = (None if needs_head and probe.probabilities is None else
                                   score(score_name, probe.labels, features=probe.features,
                                         probabilities=probe.probabilities))
            rows.append(row)
            bar.remove_task(job)
    order = scores[0]
    rows.sort(key=lambda r: float("inf") if r[order] is None else -float(r[order]))   # unscored last
    payload = {"schema": MODEL_RANKING_SCHEMA, "data": str(data), "ordered_by": order, "scores": list(scores),
               "samples": samples, "seed": seed, "ranking": rows, "note": _NOTE}
    payload["run_id"] = _log(cloud, payload)
    return payload


def _log(cloud: KnowledgeStore, payload: dict) -> str:
    from tfp_mlflow.plots import plot_ranking

    with cloud.record(Kind.MODEL_RANKING, {Tag.ORDERED_BY: payload["ordered_by"]},
                      experiment=MODEL_RANKING_EXPERIMENT) as run:
        run.log_params({key: str(payload[key])[:500] for key in ("data", "ordered_by", "samples", "seed")})
        run.log_metrics({f"{name}.{row['architecture']}"[:250]: row[name]
                         for row in payload["ranking"] for name in payload["scores"]})
        run.log_file("model_ranking.json", lambda p: p.write_text(json.dumps({**payload, "run_id": run.run_id},
                                                                             indent=1)))
        order = payload["ordered_by"]
        shown = [r for r in payload["ranking"] if r[order] is not None]
        if shown:
            run.log_file("model_ranking.png", lambda p: plot_ranking(
                [r["architecture"] for r in shown], [r[order] for r in shown], p,
                title=f"{order} on {Path(payload['data']).name}", xlabel=f"{order} (higher is better)"))
    return run.run_id
