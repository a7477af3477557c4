"""Optuna's private names that tfp uses (no public alias exists for any of them).

* ``BaseHeartbeat`` (``optuna.storages._heartbeat``): the interface a storage implements for heartbeats (what
  ``RDBStorage`` implements); the cloud's study storage implements it too, overriding :data:`STALE_TRIALS_HOOK`,
  the method Optuna's heartbeat machinery calls to find silent trials.
* ``FrozenStudy`` (``optuna.study._frozen``): what a storage's ``get_all_studies`` returns.
* :data:`ENQUEUED_ATTR`: the system attribute ``Study.enqueue_trial`` sets on a trial (its fixed parameters).
"""
from __future__ import annotations

from optuna.storages._heartbeat import BaseHeartbeat
from optuna.study._frozen import FrozenStudy

__all__ = ["BaseHeartbeat", "FrozenStudy", "CHECKED", "ENQUEUED_ATTR", "STALE_TRIALS_HOOK", "enqueued"]

#: The Optuna versions these names were checked against: at least the first, below the second.
CHECKED = ("5.0", "5.1")
ENQUEUED_ATTR = "fixed_params"
STALE_TRIALS_HOOK = "_get_stale_trial_ids"


def enqueued(trial) -> bool:
    """Whether a trial was enqueued (``Study.enqueue_trial``) rather than sampled."""
    return ENQUEUED_ATTR in trial.system_attrs
