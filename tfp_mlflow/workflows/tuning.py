"""Tune a target: the Optuna study behind ``tfp tune`` and the recipe, warm-started from the recommender.

The warm start fingerprints the target with the cloud's spec (as many draws as a query takes:
:func:`~tfp_mlflow.workflows.targets.query_draws`) unless a fingerprint is given. The study's storage lives
with the cloud by default: ``optuna.db`` next to a SQLite cloud's ``mlflow.db``, or the tracking server itself for a
server cloud (``mlflow``), so a study never resumes trials whose runs live in another cloud.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from tfp_mlflow.cloud import KnowledgeStore, open_cloud
from tfp_mlflow.cloud.studies import MLFLOW_STORAGE
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.fingerprint import validate_keywords
from tfp_mlflow.recommend import QueryOptions
from tfp_mlflow.workflows.recommending import plan_query, recommend_for

if TYPE_CHECKING:
    from tfp_mlflow.train import TrainConfig
    from tfp_mlflow.tune import StudyPlan, StudyResult

__all__ = ["tune_for", "default_storage"]


def default_storage(cloud: KnowledgeStore) -> str:
    """Where a study lives unless told: beside a SQLite cloud, ``sqlite:///<cloud folder>/optuna.db`` (Optuna's RDB
    storage, with heartbeats for several workers); on a tracking server, the server itself (``mlflow``: one server
    for a team, any machine can resume the study; see :mod:`tfp_mlflow.cloud.studies` for what it does not hold)."""
    if not cloud.uri.startswith("sqlite:///"):
        return MLFLOW_STORAGE
    folder = Path(cloud.uri.removeprefix("sqlite:///")).parent
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder.resolve() / 'optuna.db'}"


def tune_for(data: str | os.PathLike, cloud: KnowledgeStore | str | None = None, *,
             training: TrainConfig | None = None, study: StudyPlan | None = None,
             query: QueryOptions = QueryOptions(), keywords: Sequence[str] | str = (),
             space_path: str | None = None, fingerprint: str | os.PathLike | None = None, warm_start: bool = True,
             epochs: int | None = None, on_trial: Callable | None = None,
             on_note: Callable[[str], None] | None = None) -> StudyResult:
    """Search architecture, policy, learning rate, weight decay and truncation for ``data``; returns the
    :class:`~tfp_mlflow.tune.StudyResult`.

    ``training`` is what every trial starts from (its ``target`` becomes ``data``: image size, batch size, seed,
    workers, shrink, device, name); ``study`` names the study and its storage (default: ``tune-<task>`` beside the
    cloud, :func:`default_storage`), the trials it needs, the warm start's ``top_k`` and ``widen``; ``query`` is how
    the warm start's recommendation ranks (its ``top_k`` is the study's). Several processes with the same study name
    and storage share one study (each runs trials until ``study.n_trials`` have finished). ``epochs`` overrides the
    space's budget per trial.
    """
    from tfp_mlflow.train import TrainConfig  # torch: only where trials train
    from tfp_mlflow.tune import PAPER_ARCHITECTURES, SearchSpace, StudyPlan, loadable_architectures, run_study
    from tfp_mlflow.tune.study import cloud_architectures, cloud_policies

    query.check()
    study = study or StudyPlan()
    cloud = open_cloud(cloud)
    note = on_note or (lambda line: None)
    base = replace(training or TrainConfig(target=str(data)), target=str(data)).validate()
    study = replace(study, name=study.name or f"tune-{base.task_name}",
                    storage=study.storage or default_storage(cloud)).check()
    loadable, left_out = loadable_architectures(["tf_efficientnet_lite0", *PAPER_ARCHITECTURES,
                                                 *cloud_architectures(cloud)])
    space = SearchSpace.load(space_path, default_architectures=loadable, default_policies=sorted(cloud_policies(cloud)))
    if not space_path or "architectures" not in Path(space_path).read_text():
        space = replace(space, left_out=tuple(left_out))
    if epochs is not None:
        space = replace(space, epochs=(epochs,))   # checked on creation
    if space.left_out:
        note(f"left out {len(space.left_out)} architectures whose weights cannot be loaded here: "
             f"{', '.join(space.left_out[:6])}{' ...' if len(space.left_out) > 6 else ''}")
    recommendation = None
    if warm_start:
        words = validate_keywords([k for k in keywords.split(",") if k] if isinstance(keywords, str)
                                  else list(keywords))
        try:   # plan_query before any image is drawn: can the cloud answer at all?
            plan_query(cloud, query.selector, words, has_target=True)
            target = None if query.selector == "manual" else (fingerprint or str(data))
            warm = replace(query, top_k=study.top_k, scenarios=("architecture", "augmentation"))
            recommendation = recommend_for(target, cloud, query=warm, keywords=words, name=base.task_name,
                                           progress=False, on_note=note, own_images=False)
        except BadInputError as exc:   # e.g. the target is the only task of the cloud: the study starts cold
            note(f"no warm start: {exc}")
    return run_study(base, cloud, space, study, recommendation=recommendation, on_trial=on_trial)
