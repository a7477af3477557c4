"""`tfp tune`: an Optuna study on the target, warm-started from the recommender, every trial a nested MLflow run.

* Warm start: the top-k suggestions of ``tfp recommend`` are enqueued before the first trial
  (:mod:`tfp_mlflow.tune.warm_start`).
* Storage: any Optuna RDB URL (a SQLite file beside a SQLite cloud by default), or ``mlflow``: the cloud's own
  store (:mod:`tfp_mlflow.cloud.studies`; the default for a cloud on a tracking server). Several processes running
  the same study name share its trials; ``n_trials`` is the study's total, and a worker stops once that many
  trials have finished.
* Crashes (either storage): workers send Optuna heartbeats (every ``heartbeat`` seconds). A worker killed
  mid-trial leaves its trial RUNNING; the next worker to start a trial marks it FAIL (after three missed
  heartbeats), marks its MLflow run FAILED, and enqueues its configuration once more, so a killed warm-start
  suggestion is still measured. Only finished trials count towards ``n_trials``.
* MLflow: the study is a parent run in ``tfp-tuning``; each trial is a nested training run with its params,
  metrics and user attrs. Plots of the study are logged to the parent; the best configuration is contributed to
  the cloud as knowledge of the target (architecture result, and the policy outcome when a policy won).
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import optuna

from tfp_mlflow.cloud.base import KnowledgeStore
from tfp_mlflow.cloud.knowledge import Knowledge, KnowledgeRow
from tfp_mlflow.cloud.schema import TUNING_EXPERIMENT, Artifact, Kind, KnowledgeKind, Metric, Tag
from tfp_mlflow.cloud.store import RunRecorder
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.recommendation import Recommendation
from tfp_mlflow.tune.space import BUDGETS, NO_POLICY, SearchSpace
from tfp_mlflow.tune.storage import DEFAULT_HEARTBEAT, open_study_storage
from tfp_mlflow.tune.transfer import TRANSFERS, StudyTransferSampler, source_studies
from tfp_mlflow.tune.warm_start import enqueue_warm_start, evidence_params, warm_start_suggestions

__all__ = ["StudyPlan", "StudyResult", "cloud_policies", "cloud_architectures", "config_from_params", "run_study",
           "retried_from"]

PARENT_RUN_ATTR = "mlflow_parent_run"


@dataclass
class StudyResult:
    """The study after this worker stopped."""

    study_name: str
    storage: str
    parent_run_id: str
    best_params: dict[str, Any]
    best_value: float | None
    best_run_id: str
    trials: list[dict[str, Any]]
    warm_started: list[dict[str, Any]] = field(default_factory=list)
    knowledge_runs: list[str] = field(default_factory=list)
    space: dict[str, Any] = field(default_factory=dict)
    joined: bool = False  # this worker joined a study another had started (and warm-started)

    def to_json(self) -> dict[str, Any]:

        return {"schema": "tfp.study/1", **asdict(self)}


def cloud_policies(cloud: KnowledgeStore) -> dict[str, tuple[str, str]]:
    """Every policy in the cloud: policy id → (knowledge run, task it was learned on).

    A policy that won a study becomes its target's policy too; the task it was learned on is its first holder
    (runs come oldest first), so the provenance never moves to a later task that merely reused it.
    """
    out: dict[str, tuple[str, str]] = {}
    for run in reversed(cloud.find_runs(Kind.KNOWLEDGE, knowledge=KnowledgeKind.POLICY)):
        task = run.tags.get(Tag.TASK, "")
        for knowledge in cloud.knowledge(task, [KnowledgeKind.POLICY]):
            if knowledge.run_id == run.run_id:
                for row in knowledge.rows:
                    out.setdefault(row.policy_id, (knowledge.run_id, task))
    return out


def cloud_architectures(cloud: KnowledgeStore) -> list[str]:
    """Every timm name with an architecture result in the cloud (the candidates it knows)."""
    return [row.architecture for task in cloud.tasks() for k in cloud.knowledge(task.name, [KnowledgeKind.ARCHITECTURE])
            for row in k.rows]


def config_from_params(base, params: dict[str, Any], cloud: KnowledgeStore, policies: dict[str, tuple[str, str]], *,
                       space: SearchSpace | None = None, provenance: dict[str, Any] | None = None):
    """``base`` trained with a study's parameters (the policy's JSON read from the cloud); the epochs and image
    side are the trial's own when it drew them, else the space's (else ``base``'s)."""
    policy = None
    if params["policy"] != NO_POLICY:
        run_id, _ = policies[params["policy"]]
        policy = cloud.policy(run_id, params["policy"])
    budget = space.settings(params) if space is not None else {
        name: int(params[name]) for name in BUDGETS if name in params}
    return replace(base, scenario="architecture", architecture=params["architecture"], policy=policy,
                   policy_id="" if policy is None else params["policy"], lr=params["lr"],
                   weight_decay=params["weight_decay"], truncate=params["truncate"],
                   provenance=provenance or {}, **budget)


@dataclass(frozen=True)
class StudyPlan:
    """How a study runs: its name and storage, how many finished trials it needs, the warm start (``top_k``
    suggestions enqueued, ``widen`` to grow the space for them), the sampler's ``seed``, the workers' heartbeat,
    and whether its best configuration is contributed. One value from the command line to :func:`run_study`;
    an empty ``name`` or ``storage`` is filled in by :func:`tfp_mlflow.workflows.tune_for` (``tune-<task>``, the
    storage beside the cloud)."""

    name: str = ""
    storage: str = ""
    n_trials: int = 8
    top_k: int = 3
    widen: bool = False
    seed: int = 0
    contribute: bool = True
    heartbeat: int = DEFAULT_HEARTBEAT
    #: ``studies`` (enqueue the recommendation's configurations and learn from the nearest tasks' whole studies,
    #: :mod:`tfp_mlflow.tune.transfer`; TPE alone when none of them has a study) or ``top-k`` (enqueue only).
    transfer: str = "studies"
    #: ``--storage mlflow`` only: the accounts this study names to run its trials (``--workers``), or the account
    #: whose study this worker joins (``--study-owner``, one it named).
    workers: tuple[str, ...] = ()
    owner: str = ""

    def check(self) -> StudyPlan:
        """One-line errors for values no study can run with."""
        if not self.name or not self.storage:
            raise BadInputError("a study needs a name and an Optuna storage URL (--study, --storage)")
        if self.n_trials < 1:
            raise BadInputError(f"--n-trials must be at least 1, got {self.n_trials}")
        if self.heartbeat < 1:
            raise BadInputError(f"--heartbeat must be at least 1 second, got {self.heartbeat}")
        if self.top_k < 1:
            raise BadInputError(f"--top-k must be at least 1, got {self.top_k}")
        if self.transfer not in TRANSFERS:
            raise BadInputError(f"--transfer must be one of {', '.join(TRANSFERS)}, got {self.transfer!r}")
        return self


def run_study(base, cloud: KnowledgeStore, space: SearchSpace, plan: StudyPlan, *,
              recommendation: Recommendation | dict[str, Any] | None = None,
              on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None) -> StudyResult:
    """Create or join the study ``plan`` names and run trials until it holds ``plan.n_trials`` finished ones (see
    the module doc); ``recommendation`` warm-starts a new study (the object itself travels on; a JSON form or a
    file is read once here).

    ``base`` is the :class:`~tfp_mlflow.train.TrainConfig` every trial starts from (target, image size, seed).
    """
    plan.check()
    recommendation = None if recommendation is None else Recommendation.read(recommendation)
    policies = cloud_policies(cloud)
    unknown = [p for p in space.policies if p != NO_POLICY and p not in policies]
    if unknown:
        raise BadInputError(f"policy {unknown[0]!r} of the search space is not in the cloud at {cloud.uri}; see the "
                            f"policies in `tfp recommend` or remove it")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_study_storage(plan.storage, cloud, plan.heartbeat, _lost_trial(cloud), owner=plan.owner or None,
                                 workers=plan.workers)
    study = optuna.create_study(study_name=plan.name, storage=storage,
                                direction="maximize", load_if_exists=True,
                                sampler=_sampler(cloud, plan, base, recommendation),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    suggestions: list[dict[str, Any]] = []
    joined = bool(study.trials)
    if recommendation is not None and not joined:
        suggestions = warm_start_suggestions(recommendation, space, plan.top_k,
                                             evidence_params(cloud, recommendation))
        space = enqueue_warm_start(study, suggestions, space, widen=plan.widen)
    parent = _parent_run(study, cloud, base, space)
    objective = _objective(base, cloud, space, policies, parent)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = [
        optuna.study.MaxTrialsCallback(plan.n_trials, states=finished)]
    if on_trial is not None:
        callbacks.append(lambda study, trial: on_trial(trial))
    if len(study.get_trials(states=finished)) < plan.n_trials:
        study.optimize(objective, callbacks=callbacks, catch=(RuntimeError,))
    if hasattr(storage, "flush_all_batches"):   # MlflowStorage batches its writes
        storage.flush_all_batches()
    # A worker that joined another account's study leaves its contribution to that account, the study's owner.
    result = _finish(study, cloud, base, parent, space, policies, suggestions, plan.storage,
                     plan.contribute and not plan.owner)
    result.joined = joined
    return result


def _sampler(cloud: KnowledgeStore, plan: StudyPlan, base, recommendation) -> optuna.samplers.BaseSampler:
    """TPE, with the nearest tasks' whole studies in front of it when ``plan.transfer`` is ``studies``."""
    tpe = optuna.samplers.TPESampler(seed=plan.seed)
    if plan.transfer != "studies" or recommendation is None:
        return tpe
    sources = source_studies(cloud, recommendation, target=base.task_name)
    return StudyTransferSampler(sources, base=tpe, seed=plan.seed) if sources else tpe


def retried_from(trial) -> int | None:
    """The number of the dead worker's trial this trial re-runs, or ``None``."""
    if not isinstance(trial, optuna.trial.FrozenTrial):  # a live Trial hides its system attrs since Optuna 5
        # By number, not position: not every storage returns trials in order (MlflowStorage: newest first).
        trial = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    return trial.system_attrs.get("failed_trial", trial.user_attrs.get("failed_trial"))


def _lost_trial(cloud: KnowledgeStore) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """Called when a dead worker's trial is marked FAIL: fail its MLflow run too, and run its configuration again."""
    with warnings.catch_warnings():  # renamed in Optuna 4.9; both are "experimental"
        warnings.simplefilter("ignore")
        retrying: Any = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or \
            optuna.storages.RetryFailedTrialCallback
        retry = retrying(max_retry=1)

    def lost(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        run_id = trial.user_attrs.get("run_id")
        if run_id:
            cloud.end_run(run_id, "FAILED", {Tag.FAILED: "worker stopped sending heartbeats (killed or lost)"})
        retry(study, trial)

    return lost


def _parent_run(study: optuna.Study, cloud: KnowledgeStore, base, space: SearchSpace) -> str:
    """The study's MLflow run, created by the first worker and found by the others through a study attr."""
    existing = study.user_attrs.get(PARENT_RUN_ATTR)
    if existing:
        try:
            cloud.get_run(existing)
        except Exception:
            raise BadInputError(f"study {study.study_name!r} belongs to another cloud: its MLflow run {existing} is "
                                f"not in {cloud.uri}; choose another --study name, or the storage beside this cloud "
                                f"(leave --storage out)") from None
        return existing
    run = cloud.start_run(Kind.STUDY, {Tag.TASK: base.task_name, Tag.STUDY: study.study_name},
                          experiment=TUNING_EXPERIMENT)
    run_id = run.run_id
    run.log_params({"study": study.study_name, "space": json.dumps(space.to_json())})
    study.set_user_attr(PARENT_RUN_ATTR, run_id)
    return study.user_attrs.get(PARENT_RUN_ATTR, run_id)


def _objective(base, cloud: KnowledgeStore, space: SearchSpace, policies: dict[str, tuple[str, str]], parent: str):
    from tfp_mlflow.train import train
    from tfp_mlflow.tune.pruning import PruningCallback

    def objective(trial: optuna.Trial) -> float:
        params = space.suggest(trial)
        origin = getattr(trial.study.sampler, "origin", None)
        shaped = origin(trial.number) if origin is not None else None
        if shaped is not None:   # which source study proposed this trial
            trial.set_user_attr("transfer_from", shaped)
        provenance = {"study": trial.study.study_name, "trial": trial.number,
                      **{k: v for k, v in trial.user_attrs.items() if v not in (None, "") and k != "run_id"}}
        retry_of = retried_from(trial)
        if retry_of is not None:   # a dead worker's trial, run again
            provenance["retry_of"] = retry_of
        config = config_from_params(base, params, cloud, policies, space=space, provenance=provenance)
        pruning = PruningCallback(trial)
        try:
            result = train(config, cloud=cloud, progress=False, log_model=False, experiment=TUNING_EXPERIMENT,
                           parent_run_id=parent, callbacks=[pruning],
                           on_run_start=lambda run_id: trial.set_user_attr("run_id", run_id))
        except optuna.TrialPruned:
            cloud.end_run(trial.user_attrs["run_id"], "KILLED", {Tag.PRUNED: "1"})
            raise
        if result.auroc is not None:
            trial.set_user_attr("auroc", result.auroc)
        return result.balanced_accuracy

    return objective


def _finish(study: optuna.Study, cloud: KnowledgeStore, base, parent: str, space: SearchSpace,
            policies: dict[str, tuple[str, str]], suggestions: list, storage: str, contribute: bool) -> StudyResult:
    run = cloud.recorder(parent)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    ordered = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)   # any storage's order
    trials = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
               "user_attrs": t.user_attrs} for t in ordered]
    result = StudyResult(study_name=study.study_name, storage=storage, parent_run_id=parent, best_params={},
                         best_value=None, best_run_id="", trials=trials,
                         warm_started=[s["params"] for s in suggestions], space=space.to_json())
    if complete:
        best = study.best_trial
        result.best_params, result.best_value = best.params, best.value
        result.best_run_id = best.user_attrs.get("run_id", "")
        run.set_tags({f"{Tag.BEST_PREFIX}{key}": value for key, value in best.params.items()})
        run.log_metrics({Metric.BEST_BALANCED_ACCURACY: best.value, Metric.TRIALS: len(trials)})
        if contribute:
            result.knowledge_runs = _contribute_best(cloud, base, best, policies)
    _log_plots(study, run)
    run.log_file(Artifact.STUDY, lambda p: p.write_text(json.dumps(result.to_json(), indent=1, default=str)))
    run.finish()
    return result


def _contribute_best(cloud: KnowledgeStore, base, best: optuna.trial.FrozenTrial,
                     policies: dict[str, tuple[str, str]]) -> list[str]:
    """The best configuration as knowledge of the target (content-keyed: every worker writes it once)."""
    params, run_id = best.params, best.user_attrs.get("run_id", "")
    row = {"balanced_accuracy": best.value, "auroc": best.user_attrs.get("auroc"), "evidence_run": run_id}
    cut = "" if params.get("truncate") is None else f", truncated at block {params['truncate']}"
    provenance = f"tfp tune study, best trial {best.number} (policy {params['policy']}{cut})"
    task = base.task_name
    items = [Knowledge(task, KnowledgeKind.ARCHITECTURE, (KnowledgeRow(architecture=params["architecture"], **row),),
                       provenance=provenance)]
    if params["policy"] != NO_POLICY:
        policy_run, source = policies[params["policy"]]
        # A warm-start suggestion names the source it was recommended from; that is the hop this study took.
        source = best.user_attrs.get("policy_source") or source
        items.append(Knowledge(task, KnowledgeKind.AUGMENTATION,
                               (KnowledgeRow(source=source, policy_id=params["policy"], **row),),
                               provenance=provenance))
        # The winning policy becomes the target's own policy, recommendable to the next similar task.
        items.append(Knowledge(task, KnowledgeKind.POLICY, (KnowledgeRow(policy_id=params["policy"], **row),),
                               provenance=provenance,
                               policies={params["policy"]: cloud.policy(policy_run, params["policy"])}))
    if cloud.task(task) is None:
        cloud.contribute(None, name=task)
    return [cloud.add_knowledge(item) for item in items]


def _log_plots(study: optuna.Study, run: RunRecorder) -> None:
    """Optimisation history, parameter importances and parallel coordinates (Optuna's matplotlib plots)."""
    from optuna.visualization import matplotlib as plots

    from tfp_mlflow.plots import _pyplot

    plt = _pyplot()
    for name, draw in (("optimization_history", plots.plot_optimization_history),
                       ("param_importances", plots.plot_param_importances),
                       ("parallel_coordinate", plots.plot_parallel_coordinate)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                axes: Any = draw(study)   # one Axes, or an array of them
            except (ValueError, RuntimeError, ZeroDivisionError):  # too few finished trials for this plot
                continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure

        def save(path, figure=figure):
            figure.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(figure)

        run.log_file(f"plots/{name}.png", save)
