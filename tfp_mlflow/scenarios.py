"""The transfer scenarios, defined once: what is transferred from a chosen source to the target (docs/method.md §1).

Every module that does something per scenario (recommend, train, the reference import, evaluate, the CLI and the
server) reads this registry. Adding a scenario means one :func:`register_scenario` call here and its training hook
in :mod:`tfp_mlflow.train.scenarios`; nothing else names scenarios. Torch-free.

>>> [s.name for s in list_scenarios()]
['architecture', 'pretraining', 'augmentation', 'cotraining']
>>> get_scenario("cotraining").outcome
'cotraining'
"""
from __future__ import annotations

from dataclasses import dataclass

from tfp_mlflow.cloud.schema import KnowledgeKind
from tfp_mlflow.errors import BadInputError

__all__ = ["Scenario", "register_scenario", "get_scenario", "list_scenarios", "scenario_names", "outcome_scenarios",
           "BASELINE", "ITEM_ARCHITECTURE", "ITEM_POLICY", "ITEM_DATA"]

#: Training without any transfer: the reference every outcome is compared with. Not a scenario.
BASELINE = "baseline"
#: What a recommendation item of a scenario carries.
ITEM_ARCHITECTURE, ITEM_POLICY, ITEM_DATA = "architecture", "policy", "data"


@dataclass(frozen=True)
class Scenario:
    """One transfer scenario.

    Attributes
    ----------
    name : str
        Registry name, used on the command line, in JSON and in MLflow tags.
    title : str
        How people read it (``"co-training"``).
    item : str
        What its recommendation gives: ``"architecture"`` (the source's best timm model, read from its
        ``architecture`` knowledge), ``"policy"`` (the source's augmentation policy, from its ``policy``
        knowledge) or ``"data"`` (the source's shareable data).
    outcome : str
        The knowledge kind that records a measured transfer outcome of this scenario (the target trained with
        what the source gave).
    reference_file : str
        The stem of its outcome tables in the reference study (``load_<stem>_experiment%...csv``).
    shrunk_flag : bool
        Whether those tables' names carry the ``SHRUNK`` flag (architecture and co-training do).
    training : str
        ``module:attribute`` of its training hook (:class:`tfp_mlflow.train.scenarios.TrainingHook`), imported
        only when training, so this registry stays torch-free.
    reference_note : str
        What the reference study does not contain for this scenario, said in a recommendation's notes.
    """

    name: str
    title: str
    item: str
    outcome: str
    reference_file: str
    shrunk_flag: bool
    training: str
    reference_note: str = ""

    @property
    def needs_source_data(self) -> bool:
        """Training needs the source's images (its data is what is transferred)."""
        return self.item == ITEM_DATA


_REGISTRY: dict[str, Scenario] = {}


def register_scenario(scenario: Scenario) -> Scenario:
    if scenario.name in _REGISTRY or scenario.name == BASELINE:
        raise ValueError(f"scenario {scenario.name!r} is registered already")
    _REGISTRY[scenario.name] = scenario
    return scenario


def get_scenario(name: str) -> Scenario:
    """The scenario called ``name``; a one-line :class:`BadInputError` for any other name."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BadInputError(f"unknown scenario {name!r}; use all or one of {', '.join(_REGISTRY)}") from None


def list_scenarios() -> list[Scenario]:
    """Every scenario, in the reference's order (architecture, pretraining, augmentation, co-training)."""
    return list(_REGISTRY.values())


def scenario_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def outcome_scenarios() -> dict[str, str]:
    """The knowledge kind of each scenario's measured outcomes, to the scenario's name (the one mapping the track
    record and the cloud's evaluation read outcome tables by)."""
    return {s.outcome: s.name for s in _REGISTRY.values()}


_NO_DATA_URI = ("reference tasks are public datasets: their suggestions name the dataset and where it is published "
                "(download it and train with --source-data PATH, or record where it is with "
                "`tfp contribute --name TASK --data-uri URI --shareable`)")
_HOOKS = "tfp_mlflow.train.scenarios"

register_scenario(Scenario(
    "architecture", "architecture", ITEM_ARCHITECTURE, KnowledgeKind.ARCHITECTURE_TRANSFER, "arch", True,
    f"{_HOOKS}:TARGET_ONLY",
    "the reference publishes transfer outcomes with each source's best architecture, not that "
    "architecture's timm name; no name is recommended for reference tasks"))
register_scenario(Scenario(
    "pretraining", "pretraining", ITEM_DATA, KnowledgeKind.PRETRAINING, "pretrain", False,
    f"{_HOOKS}:PRETRAIN_THEN_FINETUNE", _NO_DATA_URI))
register_scenario(Scenario(
    "augmentation", "augmentation", ITEM_POLICY, KnowledgeKind.AUGMENTATION, "augmentation", False,
    f"{_HOOKS}:TARGET_ONLY", "reference policies are listed by repetition; all three are in the cloud"))
register_scenario(Scenario(
    "cotraining", "co-training", ITEM_DATA, KnowledgeKind.COTRAINING, "multi_task", True,
    f"{_HOOKS}:COTRAIN", _NO_DATA_URI))
