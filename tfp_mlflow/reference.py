"""The published knowledge base of the 71-task study, the reference (Godau et al.), read from a folder laid out like
the copy shipped in ``tfp_mlflow/data/reference/`` (MIT): tasks, protocol, transfer outcomes, baselines, distances
and policies.

Everything is parsed without ``eval`` (keywords with :func:`ast.literal_eval`) and checked on the way in, so a
damaged copy fails with one line naming the file. Torch-free.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tfp_mlflow._paths import default_cache_dir
from tfp_mlflow.cloud.schema import BASE_METRICS, Metric
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.scenarios import get_scenario, list_scenarios

__all__ = ["Reference", "ReferenceTask", "METRIC_CODES", "read_distance_matrix",
           "bundled_reference"]

#: Our scenario names and the reference's experiment names.
#: Base metrics: our name → the reference's.
#: The base metrics' codes in the reference's file names.
METRIC_CODES = {Metric.BALANCED_ACCURACY: "BA", Metric.AUROC: "AUROC"}
STUDY = "Godau et al. 2024, arXiv:2412.08763 (IMSY-DKFZ/task-fingerprinting, MIT licence)"


@dataclass(frozen=True)
class ReferenceTask:
    """One of the reference's tasks as ``task_infos.csv`` describes it."""

    name: str
    keywords: tuple[str, ...]
    num_images: int
    num_classes: int
    domain: str
    dimensions: float
    dataset: str
    imbalance_ratio: float


@dataclass
class Reference:
    """The reference's data, indexed for evaluation and import.

    Attributes
    ----------
    tasks : dict of name to ReferenceTask
        In the protocol's source order (development tasks, then validation tasks).
    validation, development : list of str
    groups : dict of group name to list of task names
        Tasks that share images: never source and target of each other.
    shrink_map : dict
        Task → the name of its 800-sample variant in the distance matrices (itself when not shrinkable).
    outcomes : dict of (scenario, base metric) to DataFrame
        Long tables with columns ``r`` (repetition), ``s`` (source), ``t`` (target), ``p`` (target performance),
        validation targets, shrunk where the target is shrinkable.
    baselines : dict of (base metric, shrunk) to DataFrame
        Rows repetitions, columns targets.
    """

    root: Path
    tasks: dict[str, ReferenceTask]
    validation: list[str]
    development: list[str]
    groups: dict[str, list[str]]
    shrink_map: dict[str, str]
    outcomes: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    baselines: dict[tuple[str, bool], pd.DataFrame] = field(default_factory=dict)
    _csv: dict[Path, pd.DataFrame | None] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, root: str | os.PathLike) -> Reference:
        root = Path(root)
        if not (root / "protocol.json").is_file() or not (root / "task_infos.csv").is_file():
            raise BadInputError(f"{str(root)!r} is not a reference folder: it needs protocol.json, task_infos.csv "
                                f"and exp/ (laid out like the reference copy shipped in tfp_mlflow/data/reference/)")
        try:
            protocol = json.loads((root / "protocol.json").read_text())
            development, validation = list(protocol["development_tasks"]), list(protocol["validation_tasks"])
            groups = {k: list(v) for k, v in protocol["task_groups"].items()}
            shrink_map = dict(protocol["shrink_map"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise BadInputError(f"{str(root / 'protocol.json')!r} is not a valid protocol ({exc})") from None
        infos = _read_csv(root / "task_infos.csv", index_col=None)
        by_name = {}
        for row in infos.itertuples(index=False):
            try:
                keywords = ast.literal_eval(row.keywords)
            except (ValueError, SyntaxError):
                raise BadInputError(f"task_infos.csv: keywords of {row.name!r} are not a list literal") from None
            by_name[row.name] = ReferenceTask(
                name=row.name, keywords=tuple(str(k) for k in keywords), num_images=int(row.num_samples),
                num_classes=int(row.num_classes), domain=str(row.domains), dimensions=float(row.dimensions),
                dataset=str(row.datasets), imbalance_ratio=float(row.imbalance_ratios))
        order = development + validation
        missing = [t for t in order if t not in by_name]
        if missing:
            raise BadInputError(f"task_infos.csv lacks {len(missing)} protocol tasks (first: {missing[0]!r})")
        ref = cls(root=root, tasks={t: by_name[t] for t in order}, validation=validation,
                    development=development, groups=groups, shrink_map=shrink_map)
        for scenario in list_scenarios():
            for metric in BASE_METRICS:
                name = _outcome_file(scenario.name, metric, validation=True)
                table = _read_csv(root / "exp" / name)
                if not {"r", "s", "t", "p"} <= set(table.columns):
                    raise BadInputError(f"{str(root / 'exp' / name)!r} lacks the columns r, s, t, p")
                ref.outcomes[(scenario.name, metric)] = table[["r", "s", "t", "p"]]
        for metric, code in METRIC_CODES.items():
            for shrunk in (True, False):
                path = root / "exp" / f"load_baseline_experiment%{code}%{shrunk}%True.csv"
                ref.baselines[(metric, shrunk)] = _read_csv(path)
                ref._csv[path] = ref.baselines[(metric, shrunk)]
        return ref

    # -- protocol ---------------------------------------------------------------------------------------------
    def valid_sources(self, target: str) -> list[str]:
        """All tasks (protocol order) but the target and the tasks sharing images with it."""
        shared = {target}
        for members in self.groups.values():
            if target in members:
                shared.update(members)
        return [t for t in self.tasks if t not in shared]

    def baseline(self, target: str, metric: str, repetition: int) -> float:
        """The no-transfer performance the transfers to ``target`` are compared with (shrunk where shrinkable)."""
        shrunk = self.baselines[(metric, True)]
        table = shrunk if target in shrunk.columns else self.baselines[(metric, False)]
        return float(table.loc[repetition, target])

    def baseline_or_none(self, task: str, metric: str, repetition: int) -> float | None:
        """The task's no-transfer performance (validation or development files), ``None`` when not measured."""
        for validation in ("True", "False"):
            for shrunk in ("True", "False"):
                path = self.root / "exp" / f"load_baseline_experiment%{METRIC_CODES[metric]}%{shrunk}%{validation}.csv"
                table = self._cached_csv(path)
                if table is not None and task in table.columns and repetition in table.index:
                    value = table.loc[repetition, task]
                    return None if pd.isna(value) else float(value)
        return None

    def development_outcomes(self, scenario: str, metric: str) -> pd.DataFrame | None:
        """Outcomes with the 28 development tasks as targets (not used by the evaluation), if shipped."""
        table = self._cached_csv(self.root / "exp" / _outcome_file(scenario, metric, validation=False))
        return None if table is None else table[["r", "s", "t", "p"]]

    def _cached_csv(self, path: Path) -> pd.DataFrame | None:
        """An optional exp/ file, read once (``None`` when the copy does not ship it)."""
        if path not in self._csv:
            self._csv[path] = _read_csv(path) if path.is_file() else None
        return self._csv[path]

    def outcome_table(self, scenario: str, metric: str, repetition: int) -> pd.DataFrame:
        """Outcomes of one repetition: rows sources, columns targets."""
        table = self.outcomes[(scenario, metric)]
        return table[table["r"] == repetition].pivot_table(index="s", columns="t", values="p", aggfunc="mean")

    @property
    def repetitions(self) -> list[int]:
        return sorted({int(r) for table in self.outcomes.values() for r in table["r"].unique()})

    def distance_files(self) -> dict[str, Path]:
        """The distance matrices shipped with the reference, by selector name (file stem)."""
        folder = self.root / "distances"
        return {p.stem: p for p in sorted(folder.glob("*.csv"))} if folder.is_dir() else {}

    def policy_files(self) -> dict[tuple[str, int], Path]:
        """``(task, repetition)`` → the Faster-AutoAugment policy file."""
        out = {}
        for folder in sorted((self.root / "policies").glob("rep*")):
            repetition = int(folder.name.removeprefix("rep"))
            for path in sorted(folder.glob("*.json")):
                out[(path.stem, repetition)] = path
        return out

    def manual_matrix(self) -> pd.DataFrame:
        """Distances of the ``manual`` selector between all tasks and all targets (shrunk names included)."""
        from tfp_mlflow.selectors import get_selector
        from tfp_mlflow.task import Task

        sources = [Task(name=t.name, keywords=t.keywords, num_images=t.num_images, intrinsic_dim=t.dimensions)
                   for t in self.tasks.values()]
        targets = {self.shrink_map.get(t.name, t.name): t for t in self.tasks.values()}
        targets.update({t.name: t for t in self.tasks.values()})
        selector = get_selector("manual")
        prepared = selector.prepare(sources)
        columns = {name: selector.distances(Task(name=name, keywords=t.keywords), prepared)
                   for name, t in targets.items()}
        return pd.DataFrame(columns, index=[s.name for s in sources])


def bundled_reference(cache_dir: str | os.PathLike | None = None) -> Path:
    """The copy of the reference shipped with the package (MIT licence, LICENSE.txt inside), unpacked once.

    Safe for processes that start at once on a fresh cache (a CI run's test workers, a study's workers): each
    unpacks beside the folder and moves its copy in only where no complete one is; a complete copy is never
    replaced under a process reading it."""
    archive = Path(__file__).parent / "data" / "reference" / "tfp-paper.tar.xz"
    root = Path(cache_dir) if cache_dir else default_cache_dir() / "reference"
    folder = root / "tfp-paper"
    marker = folder / ".complete"
    if not marker.is_file():
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tfp-paper.", dir=root))
        try:
            with tarfile.open(archive, "r:xz") as tar:
                tar.extractall(staging, filter="data")
            (staging / "tfp-paper" / ".complete").write_text("")
            _install(staging / "tfp-paper", folder, marker)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def _install(unpacked: Path, folder: Path, marker: Path) -> None:
    """Move a complete unpacked copy to ``folder`` unless another process got there first. A copy without its
    marker (an interrupted unpack) is moved aside, then deleted: nobody reads one."""
    try:
        os.rename(unpacked, folder)            # refused while ``folder`` holds anything
        return
    except OSError:
        if marker.is_file():                    # another process's complete copy: ours is not needed
            return
    stale = folder.with_name(f".stale-{os.getpid()}-{folder.name}")
    os.rename(folder, stale)
    try:
        os.rename(unpacked, folder)
    except OSError:
        if not marker.is_file():
            raise
    shutil.rmtree(stale, ignore_errors=True)


def read_distance_matrix(path: str | os.PathLike) -> pd.DataFrame:
    """A distance matrix CSV (rows sources, columns targets, lower is closer)."""
    table = _read_csv(Path(path))
    try:
        return table.astype(float)
    except ValueError:
        raise BadInputError(f"distance matrix {str(path)!r} holds non-numeric entries") from None


def _read_csv(path: Path, index_col: int | None = 0) -> pd.DataFrame:
    if not path.is_file():
        raise BadInputError(f"{str(path)!r} does not exist; the reference folder is incomplete")
    try:
        return pd.read_csv(path, index_col=index_col)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{str(path)!r} is not a readable CSV ({str(exc).splitlines()[0][:120]})") from None


def _outcome_file(scenario: str, metric: str, *, validation: bool) -> str:
    """The reference's outcome table of a scenario: ``load_<stem>_experiment%<BA|AUROC>[%True]%<validation>.csv``.

    Architecture and co-training tables carry a SHRUNK flag; pretraining and augmentation were only run with shrunk
    targets (docs/method.md §6).
    """
    entry = get_scenario(scenario)
    shrunk = "%True" if entry.shrunk_flag else ""
    return f"load_{entry.reference_file}_experiment%{METRIC_CODES[metric]}{shrunk}%{validation}.csv"
