"""What the ``/tfp/`` API answers, computed with the torch-free core: task lists, task pages, the knowledge map and
server-side recommendations. The web routes (:mod:`.app`) only translate HTTP to these calls."""
from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tfp_mlflow.cloud import CloudTask, KnowledgeStore
from tfp_mlflow.cloud.schema import BASE_METRICS, Kind, Metric, Tag
from tfp_mlflow.errors import BadInputError, NotFoundError, TooLargeError
from tfp_mlflow.evidence import ORDERS, OUTCOME_KINDS, REFERENCE_PREFIX, fit_track_record
from tfp_mlflow.fingerprint import Fingerprint
from tfp_mlflow.knowledge_map import MAP_MAX_TASKS
from tfp_mlflow.knowledge_map import knowledge_map as _knowledge_map
from tfp_mlflow.noise import noise_reason
from tfp_mlflow.ranking import DEFAULT_MERGE_RULE as DEFAULT_MERGE
from tfp_mlflow.ranking import MERGE_RULES
from tfp_mlflow.recommend import QueryOptions, recommend
from tfp_mlflow.scenarios import get_scenario, scenario_names
from tfp_mlflow.selectors import (
    DEFAULT_SELECTOR,
    describe_selector,
    get_selector,
    list_selectors,
    selector_kind,
    selector_needs,
)
from tfp_mlflow.workflows import recommend_for

__all__ = ["MAX_UPLOAD_BYTES", "MAP_MAX_TASKS", "tasks", "quarantined", "task_detail", "knowledge_map",
           "recommend_upload", "selectors"]

#: Largest fingerprint upload accepted (a 1280-feature fingerprint is about 0.5 MB).
MAX_UPLOAD_BYTES = 32 * 1024 * 1024


def _task_json(task: CloudTask, kinds: list[str]) -> dict[str, Any]:
    return {**asdict(task), "keywords": list(task.keywords), "has_fingerprint": task.has_fingerprint,
            "knowledge": kinds}


def knowledge_kinds(cloud: KnowledgeStore) -> dict[str, list[str]]:
    """Kinds of knowledge per task, from one search over the knowledge runs' tags."""
    out: dict[str, set[str]] = {}
    for run in cloud.find_runs(Kind.KNOWLEDGE):
        out.setdefault(run.tags.get(Tag.TASK, ""), set()).add(run.tags.get(Tag.KNOWLEDGE, ""))
    return {task: sorted(kinds) for task, kinds in out.items()}


def tasks(cloud: KnowledgeStore) -> list[dict[str, Any]]:
    """Every task with its fields and which knowledge it has (quarantined ones left out: see :func:`quarantined`)."""
    kinds = knowledge_kinds(cloud)
    return [_task_json(t, kinds.get(t.name, [])) for t in cloud.conforming(cloud.tasks())]


def quarantined(cloud: KnowledgeStore) -> list[dict[str, str]]:
    """The runs every reader leaves out, with the reason."""
    return cloud.quarantined()


def _require_task(cloud: KnowledgeStore, name: str) -> CloudTask:
    task = cloud.task(name)
    if task is None:
        raise NotFoundError(f"the cloud holds no task named {name!r}; GET /tfp/api/tasks lists them")
    return task


def task_detail(cloud: KnowledgeStore, name: str, nearest: int = 5) -> dict[str, Any]:
    """A task, its knowledge rows and its nearest tasks by the default selector (when it has a fingerprint)."""
    task = _require_task(cloud, name)
    knowledge = cloud.knowledge(name)
    out = _task_json(task, sorted({k.kind for k in knowledge}))
    def row(r) -> dict[str, Any]:   # with what says whether its score is at chance on its held-out split
        return {**asdict(r), "noise": noise_reason(r.balanced_accuracy, Metric.BALANCED_ACCURACY, task.num_classes,
                                                   r.held_out)}

    # An outcome or baseline about this task counts only as its owner's evidence (tfp_mlflow.evidence.admissible).
    out["knowledge_runs"] = [{"kind": k.kind, "run_id": k.run_id, "provenance": k.provenance,
                              "contributor": k.contributor, "rows": [row(r) for r in k.rows],
                              "counted": k.kind not in OUTCOME_KINDS or task.measured_by_account(k.contributor)
                              or k.contributor.startswith(REFERENCE_PREFIX)} for k in knowledge]
    # How its knowledge transferred to the cloud's other targets, per scenario (what ranks it in a recommendation).
    fitted = fit_track_record(cloud, cloud.conforming(cloud.tasks()), selector="manual")
    out["track_record"] = ({scenario: fitted.model.evidence(scenario, name, "").to_json()
                            for scenario in fitted.model.scenarios()} if fitted else {})
    out["nearest"] = []
    if task.has_fingerprint:
        target = cloud.fingerprint(task)
        out["num_draws"] = target.num_draws
        out["selector"] = DEFAULT_SELECTOR
        try:
            ranked = recommend(cloud, target, name=name, top_k=1, scenarios=(), log=False).ranking[:nearest]
            out["nearest"] = [row.to_json() for row in ranked]
        except BadInputError:
            pass  # no other task with a fingerprint yet
    return out


def fingerprint_png(cloud: KnowledgeStore, name: str) -> bytes:
    """The task's fingerprint heatmap (cached by the fingerprint's checksum)."""
    task = _require_task(cloud, name)
    if not task.has_fingerprint:
        raise NotFoundError(f"task {name!r} has no fingerprint in the cloud")
    path = cloud.cache.root / "plots" / f"fingerprint-{task.fingerprint_sha256[:32]}.png"
    if not path.is_file():
        from tfp_mlflow.plots import plot_fingerprint

        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            staged = plot_fingerprint(cloud.fingerprint(task), Path(tmp) / "plot.png")
            staged.replace(path)
    return path.read_bytes()


def knowledge_map(cloud: KnowledgeStore, selector: str = DEFAULT_SELECTOR) -> dict[str, Any]:
    """2-D map of the tasks (:func:`tfp_mlflow.knowledge_map.knowledge_map`)."""
    return _knowledge_map(cloud, selector)


def recommend_upload(cloud: KnowledgeStore, body: bytes, *, top_k: int = 3, selector: str = DEFAULT_SELECTOR,
                     scenario: str = "all", metric: str = "balanced_accuracy", keywords: str = "",
                     name: str | None = None, log: bool = False, trusted: str | None = None,
                     include_flagged: bool = False, merge: str = DEFAULT_MERGE,
                     order_by: str = "auto") -> dict[str, Any]:
    """``tfp recommend --json`` for an uploaded fingerprint file (or, with ``manual``, keywords alone); every field
    of :class:`~tfp_mlflow.recommend.QueryOptions` is a parameter (``scenario``: one, ``all`` or a comma-separated
    list; ``merge``: a rule or ``none``)."""
    if len(body) > MAX_UPLOAD_BYTES:
        raise TooLargeError(f"the upload is {len(body):,} bytes; a fingerprint file is at most "
                            f"{MAX_UPLOAD_BYTES:,} (send the .npz that `tfp fingerprint` wrote)")
    # The query's own parameters first: a wrong selector or metric is said as such, whatever the upload holds.
    get_selector(selector)
    scenarios = None if scenario == "all" else tuple(s.strip() for s in scenario.split(",") if s.strip())
    for name_ in scenarios or ():
        get_scenario(name_)
    if metric not in BASE_METRICS:
        raise BadInputError(f"metric must be {' or '.join(BASE_METRICS)}, got {metric!r}")
    if merge != "none" and merge not in MERGE_RULES:
        raise BadInputError(f"merge must be none or one of {', '.join(MERGE_RULES)}, got {merge[:40]!r}")
    target = None
    if body:
        # Reading the cloud's spec needs READ permission: a caller without it is answered 403 before the upload is
        # parsed; the upload's declared layout is then checked against the spec before anything is decompressed.
        spec = cloud.spec()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "upload.npz"
            path.write_bytes(body)
            try:
                target = Fingerprint.load(path, spec)
            except BadInputError as exc:
                raise type(exc)(str(exc).replace(f"fingerprint file {str(path)!r}", "the uploaded file")) from None
    query = QueryOptions(selector=selector, top_k=top_k, scenarios=scenarios, metric=metric, trusted=trusted,
                         include_flagged=include_flagged, merge=None if merge == "none" else merge,
                         order_by=order_by)
    query.check()
    result = recommend_for(target, cloud, query=query, keywords=keywords, name=name or None, log=log, progress=False)
    return result.to_json()


def query_choices() -> dict[str, tuple[str, ...]]:
    """The values the page's form offers for each choice of :class:`~tfp_mlflow.recommend.QueryOptions` (defaults
    first)."""
    return {"scenarios": ("all", *scenario_names()), "metrics": tuple(BASE_METRICS), "orders": tuple(ORDERS),
            "merges": (DEFAULT_MERGE, *(rule for rule in MERGE_RULES if rule != DEFAULT_MERGE))}


def selectors() -> list[dict[str, Any]]:
    """The registered selectors with their descriptions and kinds (a query's ``selector`` is a ``distance`` one;
    the ``learned`` ones order its answer by themselves where they validate)."""
    return [{"name": name, "description": describe_selector(name), "kind": selector_kind(name),
             "needs_fingerprint": selector_needs(name) == "fingerprint"}
            for name in list_selectors()]
