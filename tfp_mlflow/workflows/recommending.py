"""Recommend for a dataset or a fingerprint: the headline workflow behind ``tfp recommend``, the recipes and the
server. The target is always fingerprinted with the cloud's spec, so its fingerprint can be compared.

Before a single image is drawn, :func:`plan_query` checks that the cloud can answer: which of its tasks the chosen
selector can rank, and what would make it answer when none. The embedded default cloud (``./tfp-cloud``, used
when no cloud is named) holds the reference (the published 71 tasks and their outcomes) from its first query on.
"""
from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from tfp_mlflow.cloud import Cloud, KnowledgeStore
from tfp_mlflow.errors import BadInputError, TfpError, first_line
from tfp_mlflow.fingerprint import Fingerprint, validate_keywords
from tfp_mlflow.keywords import vocabulary
from tfp_mlflow.recommend import QueryOptions, Recommendation, check_query, recommend
from tfp_mlflow.recommendation import Suggestion
from tfp_mlflow.scenarios import ITEM_ARCHITECTURE, ITEM_POLICY, get_scenario
from tfp_mlflow.selectors import get_selector
from tfp_mlflow.workflows.targets import Target, is_fingerprint_file, target_fingerprint

__all__ = ["recommend_for", "plan_query", "ensure_reference", "next_steps"]


def ensure_reference(cloud: KnowledgeStore, on_note=None) -> bool:
    """Import the reference into ``cloud`` when it holds no task at all (idempotent); True when it imported."""
    if cloud.tasks():
        return False
    from tfp_mlflow.reference import Reference, bundled_reference
    from tfp_mlflow.reference_import import import_reference

    if on_note is not None:
        on_note(f"the cloud at {cloud.uri} is new: importing the reference (71 published tasks with their "
                f"outcomes and policies; about half a minute, once)")
    import_reference(cloud, Reference.load(bundled_reference()))
    return True


def cloud_vocabulary(cloud: KnowledgeStore) -> tuple[Counter, str]:
    """How many of the cloud's tasks use each keyword (in its canonical spelling), and where the words came from:
    the cloud's tasks, or, for a cloud with none yet, the reference study's (what the first recommendation imports;
    nothing is written)."""
    tasks = cloud.tasks()
    if tasks:
        return vocabulary(t.keywords for t in tasks), f"the {len(tasks)} tasks of {cloud.uri}"
    from tfp_mlflow.reference import Reference, bundled_reference

    reference = Reference.load(bundled_reference())
    return (vocabulary(t.keywords for t in reference.tasks.values()),
            f"the reference's {len(reference.tasks)} tasks ({cloud.uri} holds none yet; the first recommendation "
            f"imports them)")


def plan_query(cloud: KnowledgeStore, selector: str, keywords: Sequence[str], *,
               has_target: bool) -> tuple[str, str | None]:
    """Which selector can answer on this cloud, before any extraction: ``(selector, note)``.

    A fingerprint selector on a cloud whose tasks are all known by keywords only falls back to ``manual`` when
    the new task's keywords are given (the note says so), and otherwise fails in one line that says what would
    make the cloud answer. Raises :class:`BadInputError` the same way for an empty cloud.
    """
    chooser = get_selector(selector)
    tasks = cloud.tasks()
    if not tasks:
        raise BadInputError(f"the cloud at {cloud.uri} holds no task yet: with the new task's --keywords (e.g. "
                            f"--keywords chest,x-ray) the 71 published tasks answer (`tfp import-reference`; the "
                            f"default ./tfp-cloud imports them itself), `tfp contribute` adds yours; for an "
                            f"architecture without any cloud, `tfp rank-models DATA`")
    check_query(selector, keywords, has_target=has_target)
    if not chooser.needs_fingerprint or any(t.has_fingerprint for t in tasks):
        return selector, None
    if keywords:
        return "manual", (f"none of the cloud's {len(tasks)} tasks has a fingerprint, so they were ranked by "
                          f"keywords (manual) and no image was drawn")
    raise BadInputError(f"none of the {len(tasks)} tasks of the cloud at {cloud.uri} has a fingerprint, so "
                        f"{selector} cannot rank them; give the new task's --keywords (e.g. --keywords chest,x-ray) "
                        f"to rank them by keywords, or `tfp contribute` fingerprinted tasks")


def next_steps(result: Recommendation, data: str | None, saved_as: str | None,
               fingerprint: str | None = None) -> list[str]:
    """The commands that act on a recommendation (``saved_as``: where its JSON is, or will be, written), each
    carrying what it needs to do as printed: ``tfp tune`` the query's signal (keywords for a ranking by keywords,
    the fingerprint file it was given), so its study is warm-started from the same suggestions."""
    import shlex

    data = shlex.quote(data) if data else "DATA"
    rec = saved_as or "rec.json"
    steps = [] if saved_as else [f"save this recommendation: add --json {rec} to the same command"]
    for scenario, advice in result.scenarios.items():
        if advice.items:
            steps.append(f"tfp train {data} --scenario {scenario} --from-recommendation {rec} --rank 1 --contribute")
    # A study searches architectures and policies: it starts from the scenarios whose items are those.
    if any(advice.items and get_scenario(name).item in (ITEM_ARCHITECTURE, ITEM_POLICY)
           for name, advice in result.scenarios.items()):
        signal = (f" --selector manual --keywords {shlex.quote(','.join(result.target['keywords']))}"
                  if result.selector == "manual" else
                  f" --fingerprint {shlex.quote(fingerprint)}" if fingerprint else "")
        trusted = f" --trusted {shlex.quote(','.join(result.trusted))}" if result.trusted else ""
        steps.append(f"tfp tune {data}{signal}{trusted} --n-trials 8      # a study warm-started from the same "
                     f"suggestions")
    if not any(advice.items for advice in result.scenarios.values()):
        steps.append(f"tfp rank-models {data}      # architecture advice from your own images, without a cloud")
    return steps


def recommend_for(data: Target = None, cloud: KnowledgeStore | str | None = None, *,
                  query: QueryOptions = QueryOptions(), keywords: Sequence[str] | str = (), name: str | None = None,
                  samples: int | None = None, rerank: str | None = None, server: str | None = None, log: bool = True,
                  progress: bool = True, on_note=None, saved_as: str | None = None,
                  own_images: bool = True, local: bool = False) -> Recommendation:
    """Recommend architectures, policies and source data for a new task.

    Parameters
    ----------
    data : Fingerprint, path or None
        A fingerprint, a ``.npz`` fingerprint file or a dataset (fingerprinted with the cloud's spec); ``None``
        with ``selector="manual"`` and ``keywords``.
    cloud : Cloud or str, optional
        The cloud or its tracking URI (default: ``MLFLOW_TRACKING_URI`` or ``./tfp-cloud``).
    query : QueryOptions
        Selector, top-k, scenarios, metric, trusted contributors, flagged results, merge rule and order
        (:class:`tfp_mlflow.recommend.QueryOptions`); the selector may fall back to ``manual`` (a note says so).
    samples : int, optional
        Draws of ``data``'s fingerprint when it is a dataset (default: ``workflows.targets.query_draws``).
    rerank : str, optional
        A transferability score (``logme``, ...) that re-orders the architecture suggestions on ``data``'s
        labelled images (``data`` must be a dataset).
    server, local
        Rank on this ``mlflow server --app-name tfp`` (one upload; here when it has no tfp app); a cloud given as an
        ``http(s)://`` URI is that server unless ``local`` (:func:`_tracking_server`).
    on_note : callable, optional
        Receives one-line notes meant for people (a fallback taken, the reference imported).
    saved_as : str, optional
        Where the caller writes the JSON; the recommendation's ``next_steps`` refer to it.
    own_images : bool
        Where the cloud holds no architecture evidence, rank the candidates on ``data``'s labelled images
        (:data:`OWN_IMAGES` of them); a study's warm start, which searches architectures itself, leaves it out.

    Example
    -------
    >>> from tfp_mlflow import recommend_for                                    # doctest: +SKIP
    >>> recommend_for("data/fundus_1", query=QueryOptions(top_k=3)).suggestions("architecture")[0].architecture
    'tf_efficientnet_lite1'
    """
    query.check()                  # options first: a wrong one costs nothing, not even a new cloud's database
    selector, server = query.selector, server or (None if local or rerank else _tracking_server(cloud))
    embedded = cloud is None and server is None and not os.environ.get("MLFLOW_TRACKING_URI")
    if cloud is None or isinstance(cloud, str):
        cloud = Cloud(server or cloud)
    words: Sequence[str] = validate_keywords([k for k in keywords.split(",") if k] if isinstance(keywords, str)
                                             else list(keywords))
    _check_data(data)
    dataset = None if data is None or isinstance(data, Fingerprint) or is_fingerprint_file(data) else str(data)
    fingerprint_file = str(data) if data is not None and not isinstance(data, Fingerprint) and dataset is None else None
    if data is not None and dataset is None:
        data = target_fingerprint(data, cloud)               # a file: loaded, nothing drawn
        words = words or list(data.keywords)
    if embedded and (words or not get_selector(selector).needs_fingerprint):
        ensure_reference(cloud, on_note)        # the reference answers by keywords: worth importing only with them
    # With --server the server checks (and ranks) itself: nothing of the cloud is read or cached here.
    selector, fallback = ((_plan_on_server(server, selector, words, has_target=True) if dataset else (selector, None))
                          if server else plan_query(cloud, selector, words, has_target=data is not None))
    if dataset is not None and not get_selector(selector).needs_fingerprint:
        fallback = " ".join(filter(None, [fallback, _unread(dataset)]))
    target = data if isinstance(data, Fingerprint) else None
    if dataset is not None and get_selector(selector).needs_fingerprint:
        target = target_fingerprint(dataset, cloud, samples=samples, name=name, keywords=words, progress=progress,
                                    on_note=on_note)
    reranker = _reranker(dataset, rerank) if rerank else None
    if server and reranker is None:
        result = _on_server(server, target, replace(query, selector=selector), keywords=words, name=name, log=log)
        if result is not None:
            result.notes.append(f"ranked on the server {server} (one upload; --local ranks here, reading its tasks)")
            return _finished(result, fallback, dataset if own_images else None, cloud, progress, on_note,
                             (saved_as, fingerprint_file), dataset)
        if on_note is not None:
            on_note(f"{server} has no tfp app (`mlflow server --app-name tfp`); ranking here")
        selector, fallback = plan_query(cloud, selector, words, has_target=target is not None)
    elif server and on_note is not None:
        on_note(f"--rerank scores models on your images, which {server} never sees: ranked here, on its tasks")
    name = name or (Path(dataset).name if target is None and dataset is not None else None)
    result = recommend(cloud, target, keywords=words, name=name, log=log, rerank=reranker,
                       **replace(query, selector=selector).as_kwargs())
    return _finished(result, fallback, dataset if own_images else None, cloud, progress, on_note,
                     (saved_as, fingerprint_file), dataset)


def _finished(result: Recommendation, fallback: str | None, images: str | None, cloud: KnowledgeStore,
              progress: bool, on_note, files: tuple[str | None, str | None], dataset: str | None) -> Recommendation:
    """The answer as it is handed over: the fallback said, architectures ranked on the user's ``images`` where the
    cloud had none, and the next steps."""
    if fallback:
        result.notes.append(fallback)
    if images is not None:
        _architectures_from_images(result, images, cloud, progress=progress, on_note=on_note)
    result.next_steps = next_steps(result, dataset, *files)
    return result


#: Labelled images an architecture ranking on the user's own data reads when the cloud has no architecture evidence.
OWN_IMAGES = 200


def _architectures_from_images(result: Recommendation, dataset: str | None, cloud: KnowledgeStore, *,
                               progress: bool, on_note=None) -> None:
    """Where the cloud holds no architecture evidence within reach, rank the candidate architectures on the user's
    own labelled images instead (LogME on frozen features, as ``tfp rank-models``), and say that is what was done;
    without images or torch, say what would."""
    advice = result.scenarios.get("architecture")
    if advice is None or advice.items:
        return
    if dataset is None:
        advice.notes.insert(0, "no architecture evidence within reach in the cloud: `tfp rank-models DATA` ranks "
                               "candidate architectures on your own labelled images")
        return
    try:
        from tfp_mlflow.workflows.models import rank_models

        if on_note is not None:
            on_note(f"no architecture evidence within reach: ranking candidate architectures on {OWN_IMAGES} of "
                    f"your labelled images (LogME on frozen features, about half a minute per candidate on a CPU)")
        ranking = rank_models(dataset, cloud, samples=OWN_IMAGES, progress=progress, on_note=on_note)
    except (ModuleNotFoundError, TfpError) as exc:
        advice.notes.insert(0, f"no architecture evidence within reach, and the candidates could not be ranked on "
                               f"your images here ({first_line(exc, 120)}); `tfp rank-models DATA` does that")
        return
    for position, row in enumerate(ranking["ranking"][:result.top_k], start=1):
        advice.items.append(Suggestion(
            item=ITEM_ARCHITECTURE, rank=position, source="your images", distance=0.0, signal="logme",
            architecture=row["architecture"], transferability={"score": "logme", "value": row["logme"]},
            evidence={"model_ranking_run": ranking["run_id"], "images": row["images"], "weights": row["weights"]}))
    advice.ordered_by = "logme on your images"
    # What the walk said of the cloud's order no longer describes these items; why it found none still does.
    advice.notes[:] = [n for n in advice.notes if not n.startswith(("ordered by", "only "))]
    advice.notes.insert(0, f"the cloud holds no architecture evidence within reach, so these were ranked on "
                           f"{ranking['ranking'][0]['images'] if ranking['ranking'] else 0} of your own labelled "
                           f"images by LogME (run {ranking['run_id']}): {ranking['note']}")


def _check_data(data: Target) -> None:
    """A DATA that names nothing is a one-line error before anything is read: a missing ``.npz`` is not a task
    name, and a missing folder or manifest is not a dataset to draw."""
    if data is None or isinstance(data, Fingerprint):
        return
    text = str(data)
    if text.partition(":")[0] in ("medmnist", "hf") and ":" in text:
        return
    if not Path(text).exists():
        what = "fingerprint file" if Path(text).suffix == ".npz" else "dataset (a folder or a CSV manifest)"
        raise BadInputError(f"no {what} at {text!r}: check the path (DATA is a folder of class folders, a CSV "
                            f"manifest, a .npz fingerprint, medmnist:NAME or hf:ORG/NAME)")


def _unread(dataset: str) -> str:
    """What the answer says of a dataset it did not draw: ranked by keywords, its images played no part."""
    from tfp_mlflow.extract import open_dataset

    try:
        images = len(open_dataset(dataset).paths)
    except BadInputError:
        images = 0
    if not images:
        return f"{dataset!r} holds no image, and none was drawn: the answer rests on the keywords alone"
    return ""


def _tracking_server(cloud: KnowledgeStore | str | None) -> str | None:
    """The cloud's URI when it names a tracking server (given, or ``MLFLOW_TRACKING_URI``): it ranks for its
    clients, one upload and no downloads. A cloud object (the server's own, a test's) ranks where it is."""
    named = cloud if cloud is not None else os.environ.get("MLFLOW_TRACKING_URI")
    return named if isinstance(named, str) and named.startswith(("http://", "https://")) else None


def _plan_on_server(server: str, selector: str, words: Sequence[str], *, has_target: bool) -> tuple[str, str | None]:
    """Before any image of a dataset is drawn for ``--server``: whether its cloud can rank by fingerprint at all
    (else ``manual`` with the keywords, or a one-line error, as :func:`plan_query` says for a local cloud)."""
    from tfp_mlflow.remote import tasks_on_server

    chooser = get_selector(selector)
    check_query(selector, words, has_target=has_target)
    if not chooser.needs_fingerprint:
        return selector, None
    tasks = tasks_on_server(server)
    if tasks is None or any(t.get("has_fingerprint") for t in tasks):
        return selector, None     # no tfp app (ranked here later), or fingerprints to rank
    if words:
        return "manual", (f"none of the {len(tasks)} tasks on {server} has a fingerprint, so they were ranked by "
                          f"keywords (manual) and no image was drawn")
    raise BadInputError(f"none of the {len(tasks)} tasks on {server} has a fingerprint, so {selector} cannot rank "
                        f"them; give the new task's --keywords to rank them by keywords (no image is drawn)")


def _reranker(dataset: str | None, score: str):
    """The architecture re-ranking by a transferability ``score`` on the target's labelled images."""
    from tfp_mlflow.extract.probe import transferability_reranker  # torch: only when asked for

    if dataset is None:
        raise BadInputError("--rerank scores models on the target's labelled images: give DATA as a dataset "
                            "(a folder of class folders or a CSV manifest), not a fingerprint")
    return transferability_reranker(dataset, score)


def _on_server(server: str, target: Fingerprint | None, query: QueryOptions, *, keywords: Sequence[str],
               name: str | None, log: bool) -> Recommendation | None:
    """The server's answer to one upload of the target (every field of ``query`` sent); ``None`` when it has no
    tfp app."""
    from tfp_mlflow.remote import recommend_on_server

    with tempfile.TemporaryDirectory() as tmp:
        body = target.save(Path(tmp) / "target.npz").read_bytes() if target is not None else b""
    trusted = query.trusted if isinstance(query.trusted, (str, type(None))) else ",".join(query.trusted)
    scenario = "all" if query.scenarios is None else ",".join(query.scenarios)
    payload = recommend_on_server(server, body, top_k=query.top_k, selector=query.selector, scenario=scenario,
                                  metric=query.metric, keywords=",".join(keywords), name=name, log=log,
                                  trusted=trusted, include_flagged=query.include_flagged,
                                  merge=query.merge or "none", order_by=query.order_by)
    return None if payload is None else Recommendation.from_json(payload)
