"""Upstream internals stay contained: each compat module's checked version range holds the installed version (else
this fails, naming the module to recheck), and every private name it holds still exists where it says."""
from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

import pytest
from packaging.version import Version

from tfp_mlflow._compat import mlflow as mlflow_compat
from tfp_mlflow._compat import optuna as optuna_compat

PACKAGE = Path(optuna_compat.__file__).parents[1]


@pytest.mark.parametrize("module, distribution", [(optuna_compat, "optuna"), (mlflow_compat, "mlflow")])
def test_the_installed_version_is_one_the_compat_module_was_checked_against(module, distribution):
    low, high = map(Version, module.CHECKED)
    installed = Version(importlib.metadata.version(distribution))
    assert low <= installed < high, (f"{distribution} {installed} is outside {module.__name__}.CHECKED "
                                     f"{module.CHECKED}: recheck every private name in {module.__file__}")


def test_optunas_private_names_still_mean_what_tfp_uses_them_for(tmp_path):
    import optuna

    assert hasattr(optuna_compat.BaseHeartbeat, optuna_compat.STALE_TRIALS_HOOK)
    assert optuna.storages.RDBStorage.__mro__.count(optuna_compat.BaseHeartbeat) == 1
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}")
    assert all(isinstance(s, optuna_compat.FrozenStudy) for s in study._storage.get_all_studies())
    study.enqueue_trial({"x": 1.0})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(lambda t: t.suggest_float("x", 0, 2), n_trials=2)
    assert [optuna_compat.enqueued(t) for t in study.trials] == [True, False]


def test_mlflows_private_names_still_mean_what_tfp_uses_them_for(tmp_path):
    import optuna
    from mlflow.optuna import MlflowStorage
    from mlflow.server import handlers

    from tfp_mlflow.cloud import Cloud
    from tfp_mlflow.cloud.studies import mlflow_storage
    from tfp_mlflow.testing.stores import sqlite_uri

    cloud = Cloud(sqlite_uri(tmp_path / "c" / "mlflow.db"), cache_dir=tmp_path / "cache")
    storage = mlflow_storage(cloud)
    assert isinstance(storage, MlflowStorage)
    assert mlflow_compat.storage_experiment(storage) == cloud.experiment_id("tfp-studies")
    client = mlflow_compat.storage_client(storage)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.enqueue_trial({"x": 0.3})                  # taken from WAITING: the storage records when, as a system attr
    study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), 0.5)
    storage.flush_all_batches()
    runs = client.search_runs([mlflow_compat.storage_experiment(storage)])
    study_run = next(r for r in runs if mlflow_compat.STUDY_DIRECTION_TAG in r.data.tags)
    trial_run = next(r for r in runs if r is not study_run)
    assert study_run.data.tags[mlflow_compat.STUDY_DIRECTION_TAG] == "MAXIMIZE"
    assert trial_run.data.tags[mlflow_compat.TRIAL_NUMBER_TAG] == "0"
    assert any(k.startswith(mlflow_compat.SYSTEM_ATTR_PREFIX) for k in trial_run.data.tags)
    assert callable(handlers._get_tracking_store)


def test_the_auth_configuration_is_read_again_from_the_environment_of_now(tmp_path, monkeypatch):
    """MLflow's auth module reads its configuration once, at import, and sizes its credential cache from it; a
    thread server started later runs it again."""
    import mlflow.server.auth as auth

    from tfp_mlflow._compat import mlflow as mlflow_compat

    config = tmp_path / "auth.ini"
    config.write_text("[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = sqlite:///auth.db\n"
                      "admin_username = keeper\nadmin_password = s3cret-enough\nauthorization_function = "
                      "mlflow.server.auth:authenticate_request_basic_auth\n")
    config.write_text(config.read_text() + "auth_cache_ttl_seconds = 60\n")
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(config))
    mlflow_compat.reimport_auth()
    assert auth.auth_config.admin_username == "keeper" and auth.auth_config.admin_password == "s3cret-enough"
    assert auth._USER_AUTH_CACHE is not None and auth._USER_AUTH_CACHE.ttl == 60
    monkeypatch.undo()
    mlflow_compat.reimport_auth()                     # as the rest of this process had it
    assert auth.auth_config.admin_username != "keeper"


def test_no_private_upstream_name_is_used_outside_the_compat_modules():
    used = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "_compat" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("optuna", "mlflow"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                if any(p.startswith("_") for p in node.module.split(".")) or private:
                    used.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.module} {private}")
    assert used == []
