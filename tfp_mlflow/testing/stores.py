"""Throwaway MLflow stores for tests and benchmarks.

A new SQLite tracking store spends seconds in MLflow's schema migrations before its first run. :func:`sqlite_uri`
copies an empty store migrated once per process instead, so a test's store exists in milliseconds; it is a real
MLflow SQLite store all the same (its schema is MLflow's own, at this MLflow's head revision).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

from tfp_mlflow.cloud.store import create_sqlite_store

__all__ = ["sqlite_uri"]

_TEMPLATE: Path | None = None
_LOCK = threading.Lock()


def _template() -> Path:
    global _TEMPLATE
    with _LOCK:
        if _TEMPLATE is None or not _TEMPLATE.is_file():
            path = Path(tempfile.mkdtemp(prefix="tfp-mlflow-template-")) / "mlflow.db"
            create_sqlite_store(path)
            _TEMPLATE = path
        return _TEMPLATE


def sqlite_uri(path: str | os.PathLike) -> str:
    """``sqlite:///PATH`` of a new, empty MLflow store at ``path`` (its folder created), its schema in place.

    An existing file at ``path`` is kept as it is (the URI of a store a test reopens)."""
    path = Path(path).absolute()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_template(), path)
    return f"sqlite:///{path}"
