"""Opening the Optuna storage that ``tfp tune`` workers (and ``tfp seed --storage`` workers) share: an RDB URL, or
``mlflow`` for the cloud's own store (:mod:`tfp_mlflow.cloud.studies`).

Workers that start together race to create an RDB schema (retried); on SQLite every transaction takes the write
lock first, so a waiting trial goes to exactly one worker.
"""
from __future__ import annotations

import time
import warnings

import optuna

__all__ = ["open_storage", "open_study_storage", "DEFAULT_HEARTBEAT"]

#: Seconds between a worker's heartbeats; a trial silent for three of them belonged to a dead worker.
DEFAULT_HEARTBEAT = 60


def open_study_storage(url: str, cloud=None, heartbeat: int = DEFAULT_HEARTBEAT, on_lost=None, *,
                       owner: str | None = None, workers: tuple[str, ...] = ()):
    """The storage ``url`` names: ``mlflow`` (the cloud's own store, with the same heartbeats; ``owner`` and
    ``workers`` as :func:`~tfp_mlflow.cloud.studies.mlflow_storage`), else an RDB URL."""
    from tfp_mlflow.cloud.studies import MLFLOW_STORAGE, mlflow_storage
    from tfp_mlflow.errors import BadInputError

    if url != MLFLOW_STORAGE:
        if owner or workers:
            raise BadInputError("--study-owner and --workers name accounts of the cloud: they need --storage mlflow")
        return open_storage(url, heartbeat, on_lost)
    if cloud is None:
        raise BadInputError("--storage mlflow keeps the study in the cloud; give the cloud (--tracking-uri)")
    return mlflow_storage(cloud, heartbeat=heartbeat, on_lost=on_lost, owner=owner, workers=workers)


def open_storage(url: str, heartbeat: int = DEFAULT_HEARTBEAT, on_lost=None, attempts: int = 5
                 ) -> optuna.storages.RDBStorage:
    """Open (creating on first use) an RDB storage; workers that start together race to create its schema."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental"; they fail a killed worker's trial
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", FutureWarning)
                storage = optuna.storages.RDBStorage(
                    url, heartbeat_interval=heartbeat, grace_period=3 * heartbeat, failed_trial_callback=on_lost,
                    engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None)
            if url.startswith("sqlite"):
                _serialise_sqlite(storage.engine)
            return storage
        # Another worker is creating the tables right now (PostgreSQL says DuplicateTable, SQLite "locked").
        except (IntegrityError, OperationalError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _serialise_sqlite(engine) -> None:
    """Make every transaction on a SQLite storage ``BEGIN IMMEDIATE`` (SQLAlchemy's recipe for pysqlite).

    Optuna takes a waiting trial by reading its state and writing RUNNING; PostgreSQL and MySQL lock the row
    (``FOR UPDATE``), but pysqlite begins a transaction only at the write, so two processes can both read WAITING
    and both take the same trial (seen: two seed workers on one dataset). With the write lock taken at the start
    of the transaction, the read and the write are one step."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(connection, record) -> None:
        connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()   # connections made before the listeners were attached begin the old way
