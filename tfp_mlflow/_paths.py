"""Where tfp keeps local files (converted weights, cloud downloads), and the mode of the files it writes."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir", "new_file_mode", "as_ordinary_file"]


def default_cache_dir() -> Path:
    """``$TFP_CACHE_DIR`` or ``$XDG_CACHE_HOME/tfp-mlflow`` (``~/.cache/tfp-mlflow``)."""
    root = os.environ.get("TFP_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "tfp-mlflow")
    return Path(root)


def _umask() -> int:
    """The process's umask, read without changing it (Linux's ``/proc``), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode an ordinary new file gets here (``0o666`` less the umask: ``0o644`` under the usual umask)."""
    return 0o666 & ~_umask()


def as_ordinary_file(fd: int) -> None:
    """Give a file made by :func:`tempfile.mkstemp` (mode 0600, to be renamed into place) the mode of an ordinary
    new file, so what tfp writes is readable as anything else the user writes."""
    os.fchmod(fd, new_file_mode())
