"""Work shared by several workers through an Optuna storage: each item is claimed by one worker, and the item of
a worker that died is taken over (``tfp seed --storage``).

Every item is a trial of one Optuna study. A worker claims an item by taking its waiting trial (the storage gives
each waiting trial to one worker), writes a heartbeat into it (a user attr, written before any work and then every
``heartbeat`` seconds), and once nothing is left to take, waits for the items others hold: a claim silent for three
heartbeats is failed and its item put back, to be resumed by whoever takes it. Two workers putting the same item
back at once give two trials; the earlier one wins (taken or still waiting) and the other is pruned.

Optuna's own heartbeats are not used for this: they are written by a thread, so a worker killed right after
claiming can leave no heartbeat at all, and Optuna never takes such a trial for stale.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence

__all__ = ["claim_each", "MAX_CLAIMS"]


def claim_each(keys: Sequence[str], storage: str, heartbeat: int, work: Callable[[int], None],
               say: Callable[[str], None], *, study_prefix: str = "tfp-claims", cloud=None) -> None:
    """Call ``work(index)`` for the items this worker claims (see the module doc); returns once every item is done
    (by any worker) or has failed :data:`MAX_CLAIMS` times. ``keys`` name the items (a plan's sources); the study
    is named after them, so every worker given the same keys shares one. ``storage`` is an RDB URL, or ``mlflow``
    for ``cloud``'s own store.

    An item is done when one of its trials is COMPLETE, held while one is RUNNING and its worker alive, claimable
    while one is WAITING; a claim whose worker fell silent is failed, and an item with nothing left is put back.
    """

    import optuna
    from optuna.trial import TrialState

    from tfp_mlflow.tune.storage import open_study_storage

    key = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:12]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    opened = open_study_storage(storage, cloud, heartbeat)
    study = optuna.create_study(study_name=f"{study_prefix}-{key}", load_if_exists=True, direction="maximize",
                                storage=opened)
    flush = getattr(opened, "flush_all_batches", lambda: None)   # the MLflow store batches attribute writes
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def objective(trial: optuna.Trial) -> float:
        index = trial.user_attrs.get("item")
        if index is None:          # no waiting trial was left when this worker asked: nothing claimed
            raise optuna.TrialPruned("nothing left to claim")
        others = [t for t in study.get_trials(deepcopy=False)
                  if t.number != trial.number and t.user_attrs.get("item") == index]
        # Two workers put the same item back at once: the earlier trial wins, whether its taker already shows it
        # running or not (a store that batches its writes, as MLflow's, may still show a taken trial waiting).
        if any(t.state == TrialState.COMPLETE or (t.state in (TrialState.RUNNING, TrialState.WAITING)
                                                  and t.number < trial.number) for t in others):
            raise optuna.TrialPruned("another worker holds this item")
        trial.set_user_attr("worker", worker)
        with _alive(trial, heartbeat, flush):
            work(index)
        return 1.0

    waited, given_up = False, set()
    while True:
        for trial in _silent_claims(study.get_trials(deepcopy=False), 3 * heartbeat):
            try:
                study.tell(trial.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):   # another worker got there first
                pass
        trials = study.get_trials(deepcopy=False)
        states: dict[int, list[TrialState]] = {index: [] for index in range(len(keys))}
        for trial in trials:
            states.get(trial.user_attrs.get("item", -1), []).append(trial.state)
        for index, seen in states.items():
            if any(state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING) for state in seen):
                continue
            if seen.count(TrialState.FAIL) >= MAX_CLAIMS:
                if index not in given_up:
                    say(f"{keys[index]}: failed {MAX_CLAIMS} times (see the workers' errors); left out")
                    given_up.add(index)
                continue
            # New (the first worker lays out the items) or lost (its worker died): claimable again.
            study.enqueue_trial({}, user_attrs={"item": index, "source": keys[index],
                                                "claim": seen.count(TrialState.FAIL) + 1})
        trials = study.get_trials(deepcopy=False)
        if not any(t.state == TrialState.WAITING for t in trials):
            if not any(t.state == TrialState.RUNNING for t in trials):
                return
            if not waited:
                held = {t.user_attrs.get("item") for t in trials if t.state == TrialState.RUNNING}
                say(f"waiting for {len(held)} items other workers hold; one silent for {3 * heartbeat} s is "
                    f"taken over")
                waited = True
            time.sleep(min(heartbeat, 10))
            continue
        study.optimize(objective, n_trials=1, catch=())


#: An item whose claims failed this many times (its worker raised, or fell silent) is left out.
MAX_CLAIMS = 3
ALIVE_ATTR = "alive_at"


@contextlib.contextmanager
def _alive(trial, heartbeat: int, flush: Callable[[], None] = lambda: None):
    """Write the time into the claim now and every ``heartbeat`` seconds while the block runs (the worker is alive).

    Written as a user attr, synchronously before any work starts: Optuna's own heartbeats are written by a thread
    and a worker killed before the first one reaches the storage would hold its item forever."""

    trial.set_user_attr(ALIVE_ATTR, time.time())
    flush()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat):
            trial.set_user_attr(ALIVE_ATTR, time.time())

    thread = threading.Thread(target=beat, daemon=True, name="tfp-seed-heartbeat")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _silent_claims(trials, grace: float) -> list:
    """Claims whose worker has been silent for longer than ``grace`` seconds (since its last heartbeat, or since
    the claim when it died before writing one)."""
    from optuna.trial import TrialState

    now = time.time()
    return [t for t in trials if t.state == TrialState.RUNNING
            and now - float(t.user_attrs.get(ALIVE_ATTR) or (t.datetime_start.timestamp() if t.datetime_start
                                                             else now)) > grace]
