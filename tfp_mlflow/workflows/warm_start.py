"""Your own Optuna objective, warm-started from the cloud: :func:`warm_start`.

The study, its storage, its sampler and its objective stay yours. ``warm_start`` asks the cloud what worked on the
tasks nearest your data, enqueues those configurations in your parameter names (where your search space can hold
them) and puts the whole-study transfer sampler (:class:`~tfp_mlflow.tune.transfer.StudyTransferSampler`) in front
of your sampler, which samples everything the sources do not and takes over as your own trials accumulate.

    study = optuna.create_study(direction="maximize", storage="sqlite:///optuna.db", study_name="derm")
    space = {"model": CategoricalDistribution(["resnet18", "efficientnet_b0"]), "lr": FloatDistribution(1e-4, 1e-2)}
    tfp_mlflow.warm_start(study, "data/derm/train", cloud="http://cloud:5000", space=space)
    study.optimize(objective, n_trials=20)          # objective suggests "model" and "lr" as before
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from tfp_mlflow.errors import BadInputError
from tfp_mlflow.recommendation import Recommendation

__all__ = ["ALIASES", "WarmStart", "warm_start"]

#: What tfp calls a parameter, for the names people give it (a ``names=`` mapping overrides).
ALIASES = {"architecture": ("architecture", "model", "model_name", "arch", "backbone", "net"),
           "policy": ("policy", "augmentation", "aug", "augmentation_policy"),
           "lr": ("lr", "learning_rate", "base_lr"),
           "weight_decay": ("weight_decay", "wd")}


@dataclass
class WarmStart:
    """What :func:`warm_start` did: the configurations it enqueued (your names), the source studies the sampler
    learns from, and the recommendation behind both."""

    enqueued: list[dict[str, Any]]
    sources: list[str]
    recommendation: Recommendation
    notes: list[str] = field(default_factory=list)


def warm_start(study: optuna.Study, data: Any, cloud: Any = None, *, space: Mapping[str, BaseDistribution],
               names: Mapping[str, str] | None = None, top_k: int = 3, trusted: str | Sequence[str] | None = None,
               studies: bool = True, samples: int | None = None, seed: int | None = None) -> WarmStart:
    """Warm-start ``study`` (any storage) from the cloud's knowledge about the tasks nearest ``data``.

    Parameters
    ----------
    data : dataset, fingerprint or path
        What :func:`tfp_mlflow.recommend_for` reads: a folder, CSV, ``medmnist:``/``hf:`` source, ``.npz``, or a
        :class:`~tfp_mlflow.Fingerprint`.
    space : mapping of your parameter names to Optuna distributions
        Your search space; a suggestion is enqueued only with values it can hold.
    names : mapping, optional
        Your parameter name to tfp's (``architecture``, ``policy``, ``lr``, ``weight_decay``); by default the
        common names of :data:`ALIASES`.
    studies : bool
        Also learn from the nearest tasks' whole studies (the transfer sampler); ``False``: enqueue only.
    """
    from tfp_mlflow.cloud import open_cloud
    from tfp_mlflow.recommend import QueryOptions
    from tfp_mlflow.workflows.recommending import recommend_for

    meaning = _meanings(space, names)
    cloud = open_cloud(cloud)
    query = QueryOptions(top_k=top_k,
                         trusted=trusted if trusted is None or isinstance(trusted, str) else tuple(trusted))
    recommendation = recommend_for(data, cloud, query=query, samples=samples, progress=False, own_images=False)
    enqueued, notes = _enqueue(study, cloud, recommendation, space, meaning, top_k)
    sources: list[str] = []
    if studies:
        from tfp_mlflow.tune.transfer import SourceStudy, StudyTransferSampler, source_studies

        found = source_studies(cloud, recommendation, target=recommendation.target["name"])
        yours = {tfp: mine for mine, tfp in meaning.items()}
        mapped = [SourceStudy(s.task, s.study, s.weight, tuple(
            ({yours[k]: v for k, v in params.items() if k in yours}, value) for params, value in s.trials))
            for s in found]
        mapped = [s for s in mapped if any(params for params, _ in s.trials)]
        if mapped:
            study.sampler = StudyTransferSampler(mapped, base=study.sampler, seed=seed)
            sources = [s.task for s in mapped]
        else:
            notes.append("none of the nearest tasks has a finished study tfp can read: your sampler runs alone")
    return WarmStart(enqueued, sources, recommendation, notes)


def _meanings(space: Mapping[str, BaseDistribution], names: Mapping[str, str] | None) -> dict[str, str]:
    """Your parameter name → tfp's, for the parameters of ``space`` that have one."""
    if not space:
        raise BadInputError("give your search space (space={name: optuna distribution}) so suggestions can be "
                            "enqueued in your parameter names")
    if names is not None:
        missing = [mine for mine in names if mine not in space]
        unknown = [tfp for tfp in names.values() if tfp not in ALIASES]
        if missing or unknown:
            raise BadInputError(f"names maps {(missing or unknown)[0]!r}, which is not "
                                + ("in your space" if missing else f"one of tfp's {', '.join(ALIASES)}"))
        return dict(names)
    by_alias = {alias: tfp for tfp, aliases in ALIASES.items() for alias in aliases}
    return {mine: by_alias[mine.lower()] for mine in space if mine.lower() in by_alias}


def _enqueue(study: optuna.Study, cloud, recommendation: Recommendation, space: Mapping[str, BaseDistribution],
             meaning: Mapping[str, str], top_k: int) -> tuple[list[dict[str, Any]], list[str]]:
    """The recommendation's first configurations in your names, each value kept only where ``space`` holds it."""
    from tfp_mlflow.tune.space import SearchSpace
    from tfp_mlflow.tune.warm_start import evidence_params, warm_start_suggestions

    # tfp's space over your ranges: a measured learning rate is reused where yours holds it, else your middle.
    ranges = {tfp: (distribution.low, distribution.high) for mine, tfp in meaning.items()
              if tfp in ("lr", "weight_decay") and isinstance(distribution := space[mine], FloatDistribution)}
    default = SearchSpace(architectures=("",))
    tfp_space = replace(default, lr=ranges.get("lr", default.lr),
                        weight_decay=ranges.get("weight_decay", default.weight_decay))
    out: list[dict[str, Any]] = []
    notes: list[str] = []
    dropped: set[str] = set()
    for suggestion in warm_start_suggestions(recommendation, tfp_space, top_k,
                                             evidence_params(cloud, recommendation)):
        params = {}
        for mine, tfp in meaning.items():
            value = suggestion["params"].get(tfp)
            if value in (None, "", "none") and tfp in ("architecture", "policy"):
                continue                                     # nothing suggested at this rank
            if value is not None and _holds(space[mine], value):
                params[mine] = value
            elif value is not None:
                dropped.add(mine)
        if params and params not in [e["params"] for e in out]:
            attrs = {k: v for k, v in suggestion["user_attrs"].items() if v not in (None, "")}
            study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=True)
            out.append({"params": params, "user_attrs": attrs})
    if dropped:
        notes.append(f"suggested values outside your space were left to your sampler: {', '.join(sorted(dropped))}")
    if not out:
        notes.append("no suggestion fits your space: nothing enqueued")
    return out, notes


def _holds(distribution: BaseDistribution, value: Any) -> bool:
    """Whether your distribution can hold a suggested value (through Optuna's public distribution types)."""
    if isinstance(distribution, CategoricalDistribution):
        return value in distribution.choices
    if isinstance(distribution, (FloatDistribution, IntDistribution)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        whole = isinstance(distribution, IntDistribution)
        return distribution.low <= value <= distribution.high and (not whole or float(value).is_integer())
    return False
