"""Where tfp keeps local files (converted weights, cloud downloads)."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir"]


def default_cache_dir() -> Path:
    """``$TFP_CACHE_DIR`` or ``$XDG_CACHE_HOME/tfp-mlflow`` (``~/.cache/tfp-mlflow``)."""
    root = os.environ.get("TFP_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "tfp-mlflow")
    return Path(root)
