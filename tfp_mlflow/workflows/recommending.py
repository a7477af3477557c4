"""Recommend for a dataset or a fingerprint: the headline workflow behind ``tfp recommend``, the recipes and the
server. The target is always fingerprinted with the cloud's spec, so its fingerprint can be compared."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

from tfp_mlflow.cloud import Cloud
from tfp_mlflow.cloud.schema import Metric
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.fingerprint import Fingerprint, validate_keywords
from tfp_mlflow.recommend import Recommendation, recommend

__all__ = ["recommend_for", "target_fingerprint", "is_fingerprint_file"]

Target = Fingerprint | str | os.PathLike | None


def is_fingerprint_file(data: str | os.PathLike) -> bool:
    """A saved fingerprint (``.npz`` file) rather than a dataset."""
    return Path(data).suffix == ".npz" and Path(data).is_file()


def target_fingerprint(data: Target, cloud: Cloud, *, samples: int | None = None, name: str | None = None,
                       keywords: Sequence[str] = (), progress: bool = True) -> Fingerprint | None:
    """``data`` as a fingerprint: returned as it is, loaded from a ``.npz``, or extracted from a dataset with the
    cloud's spec (the shipped default while the cloud has none). ``None`` stays ``None``."""
    if data is None or isinstance(data, Fingerprint):
        return data
    if is_fingerprint_file(data):
        return Fingerprint.load(data)
    from tfp_mlflow.extract import fingerprint_dataset

    return fingerprint_dataset(str(data), spec=cloud.spec(), samples=samples, name=name,
                               keywords=list(keywords), progress=progress)


def recommend_for(data: Target = None, cloud: Cloud | str | None = None, *, keywords: Sequence[str] | str = (),
                  name: str | None = None, selector: str = "bkld-small-target", top_k: int = 3,
                  scenarios: Sequence[str] | None = None, metric: str = Metric.BALANCED_ACCURACY,
                  samples: int | None = None, rerank: str | None = None, server: str | None = None,
                  trusted: str | Sequence[str] | None = None, include_flagged: bool = False, log: bool = True,
                  progress: bool = True, on_note=None) -> Recommendation:
    """Recommend architectures, policies and source data for a new task.

    Parameters
    ----------
    data : Fingerprint, path or None
        A fingerprint, a ``.npz`` fingerprint file or a dataset (fingerprinted with the cloud's spec); ``None``
        with ``selector="manual"`` and ``keywords``.
    cloud : Cloud or str, optional
        The cloud or its tracking URI (default: ``MLFLOW_TRACKING_URI`` or ``./tfp-cloud``).
    rerank : str, optional
        A transferability score (``logme``, ...) that re-orders the architecture suggestions on ``data``'s
        labelled images (``data`` must be a dataset).
    server : str, optional
        Rank on this ``mlflow server --app-name tfp`` (one upload); ranks here when it has no tfp app.
    on_note : callable, optional
        Receives one-line notes meant for people (a fallback taken).

    Example
    -------
    >>> from tfp_mlflow import recommend_for                                    # doctest: +SKIP
    >>> recommend_for("data/fundus_1", top_k=3).scenarios["architecture"]["items"][0]["architecture"]
    'tf_efficientnet_lite1'
    """
    if not isinstance(cloud, Cloud):
        cloud = Cloud(server or cloud)
    words = validate_keywords([k for k in keywords.split(",") if k] if isinstance(keywords, str) else list(keywords))
    target = target_fingerprint(data, cloud, samples=samples, name=name, keywords=words, progress=progress)
    reranker = None
    if rerank:
        from tfp_mlflow.extract.probe import transferability_reranker

        if data is None or isinstance(data, Fingerprint) or is_fingerprint_file(data):
            raise BadInputError("--rerank scores models on the target's labelled images: give DATA as a dataset "
                                "(a folder of class folders or a CSV manifest), not a fingerprint")
        reranker = transferability_reranker(str(data), rerank)
    if server and reranker is None:
        from tfp_mlflow.cloud.remote import recommend_on_server

        with tempfile.TemporaryDirectory() as tmp:
            body = target.save(Path(tmp) / "target.npz").read_bytes() if target is not None else b""
        scenario = scenarios[0] if scenarios is not None and len(scenarios) == 1 else "all"
        payload = recommend_on_server(server, body, top_k=top_k, selector=selector, scenario=scenario,
                                      metric=metric, keywords=",".join(words), name=name, log=log, trusted=trusted,
                                      include_flagged=include_flagged)
        if payload is not None:
            return Recommendation.from_json(payload)
        if on_note is not None:
            on_note(f"{server} has no tfp app (`mlflow server --app-name tfp`); ranking here")
    return recommend(cloud, target, keywords=words, name=name, selector=selector, top_k=top_k, scenarios=scenarios,
                     metric=metric, log=log, rerank=reranker, trusted=trusted, include_flagged=include_flagged)
