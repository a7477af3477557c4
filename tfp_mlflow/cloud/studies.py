"""Optuna studies kept in the knowledge cloud itself: MLflow's ``MlflowStorage`` over the cloud's tracking store.

With ``--storage mlflow`` a study lives in the cloud's ``tfp-studies`` experiment (the study a run, each trial a
child run with its params, values and attributes), so a team needs one server instead of a server and an Optuna
database. What it holds and what it does not, measured by ``benchmarks/studies.py`` against the RDB storage on the
same work (``benchmarks/README.md``; ``docs/usage.md``, "Where a study lives"): it keeps a study of one worker
correctly, at 0.5 s (SQLite) to 2 s (a server) of storage calls per trial against 0.03 s; it has no heartbeats, so a
killed worker's trial stays RUNNING and is not run again; and taking a waiting trial is a read followed by a write,
so with several workers an enqueued configuration can be lost (1 of 8 with 4 workers behind a server). Several
workers sharing a study should use an RDB URL.

MLflow's storage creates a new study whenever asked, so ``create_study(load_if_exists=True)`` would start a second
study of the same name instead of resuming the first; :func:`mlflow_storage` returns a subclass that keeps Optuna's
storage contract there: a name already taken raises ``DuplicatedStudyError`` (so the study is loaded), two workers
creating one at the same moment both end on the older, and a name resolves to the oldest study of that name.
"""
from __future__ import annotations

import contextlib

from tfp_mlflow.cloud.base import KnowledgeStore
from tfp_mlflow.cloud.schema import STUDIES_EXPERIMENT

__all__ = ["MLFLOW_STORAGE", "mlflow_storage"]

#: What ``--storage`` takes for "the cloud's own store".
MLFLOW_STORAGE = "mlflow"


def mlflow_storage(cloud: KnowledgeStore, *, flush_interval: float = 1.0):
    """An Optuna storage whose studies are runs of the cloud's ``tfp-studies`` experiment (created on first use,
    beside the cloud's artifacts)."""
    import mlflow
    from mlflow.optuna import MlflowStorage

    experiment_id = cloud.experiment_id(STUDIES_EXPERIMENT)
    # MlflowStorage builds its client from the process's tracking URI when it is constructed; set it for that
    # moment only, so nothing else in the process changes its store.
    with _tracking_uri(mlflow, cloud.uri):
        return _named_studies(MlflowStorage)(experiment_id=experiment_id, batch_flush_interval=flush_interval)


def _named_studies(base: type) -> type:
    """``MlflowStorage`` with one study per name (Optuna's contract for ``create_new_study``)."""
    from optuna.exceptions import DuplicatedStudyError

    class CloudStudies(base):   # type: ignore[misc, valid-type]
        def create_new_study(self, directions, study_name: str | None = None):
            if study_name is not None and self._named(study_name):
                raise DuplicatedStudyError(f"a study named {study_name!r} is already in the cloud")
            study_id = super().create_new_study(directions, study_name)
            if study_name is not None and self._named(study_name)[0] != study_id:
                # Another worker created it at the same moment: the older is the study, ours goes.
                self._mlflow_client.delete_run(study_id)
                raise DuplicatedStudyError(f"a study named {study_name!r} was created by another worker")
            return study_id

        def get_study_id_from_name(self, study_name: str):
            found = self.get_study_id_by_name_if_exists(study_name)
            if found is None:
                raise KeyError(f"no study named {study_name!r} in the cloud")
            return found

        def get_study_id_by_name_if_exists(self, study_name: str):
            self.flush_all_batches()
            named = self._named(study_name)
            return named[0] if named else None

        def get_all_studies(self):
            """The studies only (MLflow's version reads every run of the experiment, trials too, and fails)."""
            from optuna.study import StudyDirection
            from optuna.study._frozen import FrozenStudy  # the type every Optuna storage returns here

            self.flush_all_batches()
            out = []
            for run in self._studies():
                directions = run.data.tags.get("optuna.study_direction")
                if directions:
                    out.append(FrozenStudy(
                        study_name=run.data.tags["mlflow.runName"], direction=None,
                        directions=[StudyDirection[name] for name in directions.split(",")],
                        user_attrs=self.get_study_user_attrs(run.info.run_id),
                        system_attrs=self.get_study_system_attrs(run.info.run_id), study_id=run.info.run_id))
            return out

        def _named(self, study_name: str) -> list[str]:
            """Run ids of the studies (not trials) called ``study_name``, oldest first."""
            quote = "'" if "'" not in study_name else '"'
            studies = self._studies(f" and tags.mlflow.runName = {quote}{study_name}{quote}")
            return [r.info.run_id for r in sorted(studies, key=lambda r: (r.info.start_time, r.info.run_id))]

        def _studies(self, extra: str = "") -> list:
            """Every study run (a run with a direction; trials have none), all pages."""
            out, token = [], None
            while True:
                page = self._mlflow_client.search_runs(
                    experiment_ids=[self._experiment_id], max_results=1000, page_token=token,
                    filter_string=f"tags.`optuna.study_direction` LIKE '%'{extra}")
                out.extend(page)
                token = page.token
                if not token:
                    return out

    return CloudStudies


@contextlib.contextmanager
def _tracking_uri(mlflow, uri: str):
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        if previous is None:
            mlflow.set_tracking_uri("")
        else:
            mlflow.set_tracking_uri(previous)
